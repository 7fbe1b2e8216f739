"""The two marks a model places in its forward pass; a training method decides what they do.

- `FeedbackPoint` marks the output of a hidden block: the place where DFA injects its random projection
  of the global error, and where the next block's input is cut from the graph.
- `ErrorPoint` marks where the global error e is taken (usually the network output; the Transformer LM
  takes it before its vocabulary projection). Everything above it learns from its true gradient.

Until a method is attached (and under plain backprop) both marks are the identity, so a model written
with marks is an ordinary PyTorch model. Models never know which method trains them.

Graph models may also describe their graph to a method, without knowing the method (DFA-GNN,
`dfa_bench.methods.DFAGNN`, spreads the error over the graph before projecting it):
- `ErrorPoint.propagation`: the model's graph propagation operator S, a sparse (nodes x nodes) tensor with
  aggregation = S @ features (row i gathers node i's neighbours; for GCN the normalized adjacency with
  self-loops). The model sets it in its forward pass, before the error point; None (the default) for
  models that have none.
- `FeedbackPoint.hops`: how many times S is applied between this feedback point and the error point
  (L - l for the output of hidden layer l of an L-layer GCN). None (the default) when the model does
  not say.
Plain attributes, not buffers: they are not part of the model's state and cost nothing to other methods.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class MarkHandler(Protocol):
    """What a training method implements to take over the marks (see `dfa_bench.methods`)."""

    def at_feedback_point(self, point: "FeedbackPoint", h: torch.Tensor) -> torch.Tensor: ...

    def at_error_point(self, point: "ErrorPoint", y: torch.Tensor) -> torch.Tensor: ...


class _Mark(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # A plain attribute, not a submodule: the handler is not part of the model's state.
        self._handler: MarkHandler | None = None
        self.mark_name = ""  # the module path in its model, set when a method attaches

    def _active(self) -> bool:
        return self._handler is not None and torch.is_grad_enabled()


class FeedbackPoint(_Mark):
    """Identity in BP; in DFA the block output that receives B_i e (its input to the next block is cut).

    `FeedbackPoint(feedback=False)` is a cut without feedback: under DFA the path below it learns nothing
    through it (the paper's DeepFM, whose MLP reads the embeddings detached).
    """

    def __init__(self, feedback: bool = True, hops: int | None = None) -> None:
        super().__init__()
        self.feedback = feedback
        self.hops = hops  # graph models: applications of the propagation operator up to the error point

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self._handler.at_feedback_point(self, h) if self._active() else h


class ErrorPoint(_Mark):
    """Identity in BP; in DFA the tensor whose loss gradient is the global error e."""

    def __init__(self) -> None:
        super().__init__()
        self.propagation: torch.Tensor | None = None  # graph models: the sparse operator S (module docstring)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self._handler.at_error_point(self, y) if self._active() else y


def marks_of(model: nn.Module) -> tuple[list[FeedbackPoint], list[ErrorPoint]]:
    """The model's marks in module order, each named by its module path."""
    points: list[FeedbackPoint] = []
    errors: list[ErrorPoint] = []
    for name, module in model.named_modules():
        if isinstance(module, FeedbackPoint):
            module.mark_name = name
            points.append(module)
        elif isinstance(module, ErrorPoint):
            module.mark_name = name
            errors.append(module)
    return points, errors
