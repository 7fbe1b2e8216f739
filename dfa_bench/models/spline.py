"""SplineConv (Fey, Lenssen, Weichert, Müller: "SplineCNN", CVPR 2018) in plain torch.

PyTorch Geometric's `SplineConv` needs the compiled `pyg-lib` (`spline_basis`, `spline_weighting`), which no
registry reachable here serves, so the operator is written out here from its definition:

    x'_i = (1 / |N(i)|) * sum_{j in N(i)} x_j . h(u_ij)  +  x_i W_root  +  b,
    h(u) = sum_s B_s(u) W_{k_s(u)},

u_ij in [0, 1]^D the edge's pseudo-coordinate, W_k (in x out) one of prod_d K_d kernel weights, and B_s the
products over dimensions of the (degree + 1) B-spline basis functions that are non-zero at u.

The basis per dimension d (kernel size K_d, degree p), as PyG documents it:
- open spline (the default): u is scaled to v = u (K_d - p), so the K_d basis functions cover [0, 1] with
  K_d - p knot intervals;
- closed spline: v = u K_d and the basis wraps around (index K_d is index 0), as for an angle.
With t = v - floor(v), the p + 1 non-zero functions have indices (floor(v) + k) mod K_d, k = 0..p, and
values N_p(t + p - k), N_p the uniform (cardinal) B-spline of degree p supported on [0, p + 1]:
degree 1 gives (1 - t, t); degree 2 gives ((1 - t)^2 / 2, (-2t^2 + 2t + 1) / 2, t^2 / 2). Any degree >= 1.
Across dimensions the kernel index is sum_d i_d * prod_{d' < d} K_d' (dimension 0 varies fastest), and the
S = (p + 1)^D combinations are enumerated the same way; this is the layout of PyG's weight tensor
(K, in, out), so a state dict of one loads into the other.

`spline_weighting` does not gather x_j per edge (E x in, the large side on citation graphs): it forms
x W_k for every node and kernel first (N x K x out) and gathers those, the same sum in a cheaper order.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _cardinal_bspline(x: torch.Tensor, degree: int) -> torch.Tensor:
    """N_p(x), the uniform B-spline of degree p on knots 0..p+1: (1/p!) sum_j (-1)^j C(p+1, j) (x - j)_+^p."""
    out = torch.zeros_like(x)
    for j in range(degree + 2):
        out = out + (-1) ** j * math.comb(degree + 1, j) * (x - j).clamp_min(0) ** degree
    return out / math.factorial(degree)


def spline_basis(pseudo: torch.Tensor, kernel_size: Sequence[int], is_open_spline: Sequence[bool],
                 degree: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """B-spline basis values and kernel indices of every edge: two (E, (degree + 1)^D) tensors.

    pseudo: (E, D) or (E,) pseudo-coordinates in [0, 1]; kernel_size, is_open_spline: one per dimension.
    """
    if degree < 1:
        raise ValueError(f"spline degree must be at least 1, got {degree}")
    pseudo = pseudo.view(-1, 1) if pseudo.dim() == 1 else pseudo
    dims = pseudo.shape[1]
    if len(kernel_size) != dims or len(is_open_spline) != dims:
        raise ValueError(f"pseudo-coordinates have {dims} dimensions; kernel_size {list(kernel_size)} and "
                         f"is_open_spline {list(is_open_spline)} need one entry each")
    for d, (k, is_open) in enumerate(zip(kernel_size, is_open_spline)):
        if k < (degree + 1 if is_open else 1):
            raise ValueError(f"an open spline of degree {degree} needs kernel_size >= {degree + 1} "
                             f"(dimension {d}: {k})")
    local = torch.arange(degree + 1, device=pseudo.device)
    basis = torch.ones(pseudo.shape[0], 1, dtype=pseudo.dtype, device=pseudo.device)
    index = torch.zeros(pseudo.shape[0], 1, dtype=torch.long, device=pseudo.device)
    stride = 1
    for d in range(dims):
        k = int(kernel_size[d])
        v = pseudo[:, d] * (k - degree if is_open_spline[d] else k)
        low = v.floor()
        t = (v - low).unsqueeze(1)  # (E, 1)
        values = _cardinal_bspline(t + degree - local, degree)  # (E, p + 1)
        indices = (low.long().unsqueeze(1) + local) % k  # (E, p + 1)
        # Dimension d's local index varies slower than every earlier dimension's.
        basis = (basis.unsqueeze(1) * values.unsqueeze(2)).reshape(pseudo.shape[0], -1)
        index = (index.unsqueeze(1) + stride * indices.unsqueeze(2)).reshape(pseudo.shape[0], -1)
        stride *= k
    return basis, index


def spline_weighting(x: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor, index: torch.Tensor,
                     source: torch.Tensor) -> torch.Tensor:
    """The message of every edge: sum_s basis[e, s] * x[source[e]] @ weight[index[e, s]], shape (E, out)."""
    kernels, in_dim, out_dim = weight.shape
    per_node = (x @ weight.permute(1, 0, 2).reshape(in_dim, kernels * out_dim)).view(-1, kernels, out_dim)
    gathered = per_node[source.unsqueeze(1), index]  # (E, S, out)
    return (basis.unsqueeze(2) * gathered).sum(1)


class SplineConv(nn.Module):
    """PyG's `SplineConv(in, out, dim, kernel_size, is_open_spline, degree, aggr, root_weight, bias)`.

    forward(x, edge_index, pseudo): x (N, in), edge_index (2, E) source -> target (PyG's flow), pseudo (E, dim)
    in [0, 1]. Parameters as PyG names and initializes them: `weight` (K, in, out) and the root weight `lin`
    (no bias) uniform in +-1/sqrt(fan-in) (K * in and in), `bias` zero.
    """

    def __init__(self, in_channels: int, out_channels: int, dim: int, kernel_size: int | Sequence[int],
                 is_open_spline: bool | Sequence[bool] = True, degree: int = 1, aggr: str = "mean",
                 root_weight: bool = True, bias: bool = True) -> None:
        super().__init__()
        if aggr not in ("mean", "add", "max"):
            raise ValueError(f"aggr must be 'mean', 'add' or 'max', got {aggr!r}")
        self.in_channels, self.out_channels, self.dim, self.degree, self.aggr = (
            in_channels, out_channels, dim, degree, aggr)
        self.kernel_size = [int(kernel_size)] * dim if isinstance(kernel_size, int) else [int(k) for k in kernel_size]
        self.is_open_spline = ([bool(is_open_spline)] * dim if isinstance(is_open_spline, bool)
                               else [bool(o) for o in is_open_spline])
        if len(self.kernel_size) != dim or len(self.is_open_spline) != dim:
            raise ValueError(f"kernel_size and is_open_spline need {dim} entries (dim={dim})")
        kernels = math.prod(self.kernel_size)
        self.weight = nn.Parameter(torch.empty(kernels, in_channels, out_channels))
        self.lin = nn.Linear(in_channels, out_channels, bias=False) if root_weight else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.shape[0] * self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.lin is not None:
            bound = 1 / math.sqrt(self.in_channels)
            nn.init.uniform_(self.lin.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
        source, target = edge_index[0], edge_index[1]
        basis, index = spline_basis(pseudo.to(x.dtype), self.kernel_size, self.is_open_spline, self.degree)
        messages = spline_weighting(x, self.weight, basis, index, source)
        out = x.new_zeros(x.shape[0], self.out_channels)
        if self.aggr == "max":
            out = out.scatter_reduce(0, target.unsqueeze(1).expand_as(messages), messages, "amax",
                                     include_self=False)
        else:
            out = out.index_add(0, target, messages)
            if self.aggr == "mean":
                count = torch.bincount(target, minlength=x.shape[0]).clamp_min(1).to(x.dtype)
                out = out / count.unsqueeze(1)
        if self.lin is not None:
            out = out + self.lin(x)
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, dim={self.dim}, kernel_size={self.kernel_size}, "
                f"degree={self.degree}, open={self.is_open_spline}, aggr={self.aggr}")


def target_indegree(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """PyG's `TargetIndegree` transform (norm=True, no max_value): u_ij = deg(i) / max deg, shape (E, 1).

    deg is the in-degree of the edge's target node (edge_index[1]), so every edge into node i has the
    same pseudo-coordinate. This is the one-dimensional pseudo-coordinate of PyG's citation example and of
    the DFA paper's SplineConv runs (`geometric.py`: `T.TargetIndegree()`).
    """
    target = edge_index[1]
    degree = torch.bincount(target, minlength=num_nodes).float()
    return (degree / degree.max().clamp_min(1))[target].unsqueeze(1)
