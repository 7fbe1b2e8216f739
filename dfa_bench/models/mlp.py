"""The fully connected network of the companion paper (arXiv 1906.04554), with an optional bottleneck.

input -> [Linear -> activation -> (dropout) -> feedback point] per hidden layer -> Linear -> error point.
A feedback point sits after every hidden layer, where the paper's code puts its AsymmetricFeedback
(before every Linear but the first), and the error is taken on the logits.

The bottleneck (paper section "bottleneck effect") narrows one hidden layer to `size` units:
- `mode: mask` is what the paper's code does: the layer keeps its full width, but a fixed random binary
  mask lets only about size/width of its weight and bias entries learn (each entry kept with probability
  size/width; the mask is drawn from the model's seed and saved in its state).
- `mode: width` builds the layer with `size` units.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dfa_bench.marks import ErrorPoint, FeedbackPoint

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "leaky_relu": F.leaky_relu}


class MLP(nn.Module):
    def __init__(self, n_in: int, classes: int, hidden: Sequence[int], activation: str = "tanh",
                 dropout: float = 0.0, bottleneck_layer: int | None = None, bottleneck_size: int | None = None,
                 bottleneck_mode: str = "mask", mask_seed: int = 0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: choose one of {sorted(ACTIVATIONS)}")
        widths = list(hidden)
        narrow = bottleneck_size is not None and bottleneck_layer is not None
        if narrow:
            if not 0 <= bottleneck_layer < len(widths):
                raise ValueError(f"bottleneck layer {bottleneck_layer} is not one of the {len(widths)} hidden layers")
            if not 1 <= bottleneck_size <= widths[bottleneck_layer]:
                raise ValueError(f"bottleneck size {bottleneck_size} must lie in [1, {widths[bottleneck_layer]}]")
            if bottleneck_mode not in ("mask", "width"):
                raise ValueError(f"bottleneck mode {bottleneck_mode!r}: choose mask or width")
            if bottleneck_mode == "width":
                widths[bottleneck_layer] = bottleneck_size
        self.activation, self.dropout = ACTIVATIONS[activation], dropout
        dims = [n_in, *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.points = nn.ModuleList(FeedbackPoint() for _ in widths)
        self.head = nn.Linear(dims[-1], classes)
        self.logits = ErrorPoint()
        if narrow and bottleneck_mode == "mask":
            layer = self.layers[bottleneck_layer]
            keep = bottleneck_size / widths[bottleneck_layer]
            gen = torch.Generator().manual_seed(mask_seed)
            self.register_buffer("weight_mask", (torch.rand(layer.weight.shape, generator=gen) < keep).float())
            self.register_buffer("bias_mask", (torch.rand(layer.bias.shape, generator=gen) < keep).float())
            # A parameter hook scales every gradient computed for it, whatever the method.
            layer.weight.register_hook(lambda g: g * self.weight_mask)
            layer.bias.register_hook(lambda g: g * self.bias_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer, point in zip(self.layers, self.points):
            h = point(F.dropout(self.activation(layer(h)), self.dropout, self.training))
        return self.logits(self.head(h))
