"""Feedback alignment (FA; Lillicrap et al. 2016): backprop through fixed random matrices.

Every linear layer y = x W^T + b of the model keeps its forward pass and its own weight update
dW = g^T x, but sends the gradient down to its input through a fixed random matrix B of W's shape:
dx = g B instead of g W. Everything that is not a linear layer (activations, normalisation, graph
propagation, attention products, the loss) backpropagates exactly, so FA needs no marks: it takes over
`torch.nn.Linear` and PyTorch Geometric's `Linear` wherever they sit (the feedback points are left as the
identity). Weights used outside their module's forward (such as `nn.MultiheadAttention`'s projections,
in AutoInt) keep their exact gradient.

B is drawn once per layer from a seeded CPU generator, with a scale set by the layer's fan-in alone:
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), standard deviation 1/sqrt(3 fan_in) (`distribution: uniform`, the
default), or N(0, 1/fan_in), standard deviation 1/sqrt(fan_in), sqrt(3) times larger
(`distribution: gaussian`). The uniform bounds are those of PyTorch's default initialisation of
`nn.Linear` (kaiming_uniform with a = sqrt(5)), so for an `nn.Linear` left at its default initialisation B
has W's initial distribution and the signal sent down has the size backprop's would have at
initialisation. B does not follow a layer's own initialisation otherwise: PyTorch Geometric's `Linear`
(inside GCNConv, ChebConv, GATConv, ...) is glorot-initialised, U(-a, a) with a = sqrt(6 / (fan_in +
fan_out)), standard deviation sqrt(2 / (fan_in + fan_out)); for the GCN's conv2.lin (16 -> 7) that is
0.29 against B's 0.14, so there FA sends down about half of what backprop would at initialisation (the
uniform B, or 0.25 / 0.29 with the gaussian one). The scale is left as it is on purpose: the committed FA
results were produced with it. Under Adam a constant factor on the gradients below a layer is absorbed by
the per-parameter normalisation, except against Adam's eps and an L2 weight decay added to the gradient
(the graph tasks' `weight_decay`), whose relative strength it changes; under SGD it acts as a learning
rate for the layers below. The matrices are saved in checkpoints.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfa_bench.alignment import angle_deg, sample_cosine
from dfa_bench.marks import FeedbackPoint
from dfa_bench.errors import ConfigError
from dfa_bench.feedback import _stable_hash
from dfa_bench.methods import Method

log = logging.getLogger("dfa_bench")


def _is_linear(module: nn.Module) -> bool:
    """torch's Linear, or PyG's (a 2-D weight: DNAConv's grouped `Linear`, a 3-D weight applied as a grouped
    matmul, is not a linear layer FA can take over, and backpropagates exactly)."""
    if isinstance(module, nn.Linear):
        return True
    cls = type(module)
    weight = getattr(module, "weight", None)
    return (cls.__name__ == "Linear" and cls.__module__.startswith("torch_geometric")
            and isinstance(weight, torch.Tensor) and weight.dim() == 2)


class _FeedbackLinear(torch.autograd.Function):
    """F.linear forward; backward sends g B (or g W while the FA method measures the true gradient)."""

    @staticmethod
    def forward(ctx, method: "FA", x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                feedback: torch.Tensor) -> torch.Tensor:
        ctx.method, ctx.has_bias = method, bias is not None
        ctx.save_for_backward(x, weight, feedback)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight, feedback = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            down = weight if ctx.method.exact else feedback
            grad_x = (g @ down.to(g.dtype)).to(x.dtype)
        flat_g = g.reshape(-1, g.shape[-1])
        if ctx.needs_input_grad[2]:
            grad_w = (flat_g.t() @ x.reshape(-1, x.shape[-1]).to(g.dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = flat_g.sum(0).to(weight.dtype)
        return None, grad_x, grad_w, grad_b, None


class FA(Method):
    """Feedback alignment: each linear layer's backward uses a fixed random B instead of W."""

    name = "fa"
    measures_alignment = True

    def __init__(self, distribution: str = "uniform", seed: int = 0) -> None:
        super().__init__()
        if distribution not in ("uniform", "gaussian"):
            raise ConfigError(f"feedback distribution must be 'uniform' or 'gaussian', got {distribution!r}")
        self.distribution, self.seed = distribution, seed
        self.matrices: dict[str, torch.Tensor] = {}  # layer name -> B, on the layer's device
        self.exact = False  # True only while measuring the true gradient
        self._recording: list[tuple[str, torch.Tensor]] | None = None  # feedback points, while measuring

    def attach(self, model: nn.Module) -> "FA":
        super().attach(model)
        layers = [(name, m) for name, m in model.named_modules() if _is_linear(m)]
        if not layers:
            log.warning("method=fa: the model has no linear layer, so FA trains it exactly as backprop")
        for name, layer in layers:
            self.matrices[name] = self._draw(name, layer.weight).to(layer.weight.device)
            layer.forward = self._forward_of(name, layer)  # an instance attribute: the class is untouched
        return self

    def _draw(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + _stable_hash(name))
        fan_in = weight.shape[1]
        if self.distribution == "uniform":
            return (torch.rand(weight.shape, generator=gen) * 2 - 1) / math.sqrt(fan_in)
        return torch.randn(weight.shape, generator=gen) / math.sqrt(fan_in)

    def _forward_of(self, name: str, layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return F.linear(x, layer.weight, layer.bias)
            feedback = self.matrices[name]
            if feedback.device != layer.weight.device:  # the model moved after attach
                feedback = self.matrices[name] = feedback.to(layer.weight.device)
            return _FeedbackLinear.apply(self, x, layer.weight, layer.bias, feedback)

        return forward

    # -- alignment -----------------------------------------------------------------------------
    def at_feedback_point(self, point: FeedbackPoint, h: torch.Tensor) -> torch.Tensor:
        if self._recording is not None and h.requires_grad:
            self._recording.append((point.mark_name, h))
        return h

    def measured_step(self, compute_loss: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """One training step that also measures alignment; sets the same .grad as the hot path.

        Reports `align/param/<name>` (FA update vs true gradient, for every parameter whose update differs
        from its true gradient) and `align/point/<name>` (FA's gradient vs the true one at feedback points).
        """
        self._recording = []
        try:
            loss = compute_loss()
        finally:
            points, self._recording = self._recording, None
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        leaves = [p for _, p in named] + [h for _, h in points]
        self.exact = True
        try:
            true = torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True)
        finally:
            self.exact = False
        used = torch.autograd.grad(loss, leaves, allow_unused=True)
        angles: dict[str, float] = {}
        for (name, p), g_true, g in zip(named, true, used):
            if g is None:
                continue
            p.grad = g if p.grad is None else p.grad + g
            if not torch.equal(g, g_true):
                angles[f"align/param/{name}"] = angle_deg(g, g_true)
        for (name, _), g_true, g in zip(points, true[len(named):], used[len(named):]):
            if g is not None and g_true is not None and not torch.equal(g, g_true):
                angles[f"align/point/{name}"] = angle_deg(g, g_true)
                angles[f"align/sample_cos/{name}"] = sample_cosine(g, g_true)
        return loss, angles

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.distribution, "seed": self.seed,
                "matrices": {k: v.cpu() for k, v in self.matrices.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for name, matrix in state["matrices"].items():
            if name not in self.matrices:
                raise ValueError(f"checkpoint has an FA matrix for {name!r}, which this model does not have")
            self.matrices[name] = matrix.to(self.matrices[name].device)
