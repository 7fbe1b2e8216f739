"""The NeRF MLP (Mildenhall et al. 2020) with a feedback point after every hidden layer.

Positional encodings of 10 (position) and 4 (view direction) log-spaced frequencies, raw input included
(63 and 27 values). A trunk of `layers` ReLU layers of `width` units, the encoded input concatenated again to the
output of layer `skip` (0-based, as the original code: layer skip+1 reads width + 63 values); density from the trunk; RGB from a feature layer and one (width/2) view-direction layer.
Feedback points sit after every trunk layer, the feature layer and the view-direction layer, as in the
paper's DFAFlexibleNeRFModel. The error point is the raw 4-vector (rgb, sigma) of every sample point, so
e is the gradient of the photometric loss through the volume renderer.

`layers=8, skip=4` is the intended NeRF (`model=nerf`). `model=nerf_as_run` is exactly the architecture
of the paper's published DFA models (read from their checkpoints' tensor shapes): `layers=4, skip=null,
width=128`, their model's constructor defaults (their configs say 8 or 4 layers of 256; the layer count
was never passed to the model), and `feature_relu=true`: the authors' DFAFlexibleNeRFModel puts a ReLU on the feature
layer (feat = relu(fc_feat(h)), its feedback point after the ReLU), where the original NeRF's feature
layer is linear. 84,548 parameters per network. Their checkpoints load into it through
`dfa_bench.nerf_published` (which also reorders the encoding's columns: theirs interleave sin and cos per
frequency, ours put all sines before all cosines).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfa_bench.marks import ErrorPoint, FeedbackPoint


def positional_encoding(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """[x, sin(2^k x), cos(2^k x) for k < frequencies] along the last dimension."""
    scales = 2.0 ** torch.arange(frequencies, dtype=x.dtype, device=x.device)
    angles = (x[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class NeRFMLP(nn.Module):
    def __init__(self, layers: int = 8, width: int = 256, skip: int | None = 4, xyz_frequencies: int = 10,
                 dir_frequencies: int = 4, feature_relu: bool = False) -> None:
        super().__init__()
        self.xyz_frequencies, self.dir_frequencies, self.skip = xyz_frequencies, dir_frequencies, skip
        self.feature_relu = feature_relu
        xyz_dim, dir_dim = 3 + 6 * xyz_frequencies, 3 + 6 * dir_frequencies
        self.trunk = nn.ModuleList()
        for i in range(layers):
            in_dim = xyz_dim if i == 0 else width + (xyz_dim if skip is not None and i == skip + 1 else 0)
            self.trunk.append(nn.Linear(in_dim, width))
        self.trunk_points = nn.ModuleList(FeedbackPoint() for _ in range(layers))
        self.sigma = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.feature_point = FeedbackPoint()
        self.view = nn.Linear(width + dir_dim, width // 2)
        self.view_point = FeedbackPoint()
        self.rgb = nn.Linear(width // 2, 3)
        self.raw = ErrorPoint()

    def forward(self, xyz: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
        """Raw (rgb, sigma) before their activations, for points (n x 3) and unit view directions (n x 3)."""
        x_enc = positional_encoding(xyz, self.xyz_frequencies)
        d_enc = positional_encoding(viewdirs, self.dir_frequencies)
        h = x_enc
        for i, (layer, point) in enumerate(zip(self.trunk, self.trunk_points)):
            if self.skip is not None and i == self.skip + 1:  # the input again after layer `skip` (0-based)
                h = torch.cat([x_enc, h], dim=-1)
            h = point(F.relu(layer(h)))
        sigma = self.sigma(h)
        feature = self.feature(h)
        feature = self.feature_point(F.relu(feature) if self.feature_relu else feature)
        v = self.view_point(F.relu(self.view(torch.cat([feature, d_enc], dim=-1))))
        return self.raw(torch.cat([self.rgb(v), sigma], dim=-1))


class NeRF(nn.Module):
    """The coarse and the fine network (each with its own error point)."""

    def __init__(self, layers: int, width: int, skip: int | None, xyz_frequencies: int, dir_frequencies: int,
                 fine: bool = True, feature_relu: bool = False) -> None:
        super().__init__()
        self.coarse = NeRFMLP(layers, width, skip, xyz_frequencies, dir_frequencies, feature_relu)
        self.fine = NeRFMLP(layers, width, skip, xyz_frequencies, dir_frequencies, feature_relu) if fine else None
