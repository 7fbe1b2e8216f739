"""Training methods: what gradient reaches each feedback point of a model.

- `BP`: ordinary backpropagation; the marks are the identity.
- `DFA`: Direct Feedback Alignment. Each feedback point cuts its block output from the next block's input
  (a plain `detach()`: the next block computes no gradient for its input) and records the block output.
  The error point wraps its tensor y, together with every recorded block output, in ONE autograd
  Function. In the single `loss.backward()` call, that Function receives the true global error
  e = dL/dy, projects it to all feedback points with one matrix product (`dfa_bench.feedback`), and hands
  B_i e to block output i as its gradient. Autograd then forms each block's update
  dW_i = -[(B_i e) * f'(a_i)] h_{i-1}^T inside the block; layers above the error point (and the layers
  between the last feedback point and it) learn from their true gradient.
- `Shallow`: the paper's shallow baseline. Feedback points cut the graph and nothing is injected, so only
  the layers above the last feedback point learn; hidden blocks keep their random initialization.

Methods know nothing of tasks: they see marks (`dfa_bench.marks`) and a loss.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from dfa_bench.alignment import measure_alignment
from dfa_bench.feedback import CallableProjection, FeedbackMatrices
from dfa_bench.marks import ErrorPoint, FeedbackPoint, marks_of


class Method:
    """Backpropagation; the base of every method."""

    name = "bp"
    measures_alignment = False

    def __init__(self) -> None:
        self.model: nn.Module | None = None

    def attach(self, model: nn.Module) -> "Method":
        points, errors = marks_of(model)
        for mark in [*points, *errors]:
            mark._handler = self
        self.model = model
        self.feedback_points, self.error_points = points, errors
        return self

    def at_feedback_point(self, point: FeedbackPoint, h: torch.Tensor) -> torch.Tensor:
        return h

    def at_error_point(self, point: ErrorPoint, y: torch.Tensor) -> torch.Tensor:
        return y

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint was written by method {state.get('name')!r}, not {self.name!r}")


BP = Method


class Shallow(Method):
    """Only the layers above the last feedback point learn."""

    name = "shallow"

    def at_feedback_point(self, point: FeedbackPoint, h: torch.Tensor) -> torch.Tensor:
        return h.detach()


class _InjectFeedback(torch.autograd.Function):
    """Identity on y in the forward pass; in the backward pass, B_i e to every recorded block output."""

    @staticmethod
    def forward(ctx, method: "DFA", key: str, names: list[str], y: torch.Tensor, *hs: torch.Tensor):
        ctx.method, ctx.key, ctx.names = method, key, names
        ctx.h_meta = [(h.shape, h.dtype) for h in hs]
        return y.view_as(y)

    @staticmethod
    def backward(ctx, e: torch.Tensor):
        if not any(ctx.needs_input_grad[4:]):
            return (None, None, None, e, *([None] * len(ctx.h_meta)))
        signals = ctx.method.signals(ctx.key, e, ctx.names, ctx.h_meta)
        return (None, None, None, e, *signals)


class DFA(Method):
    """Direct Feedback Alignment; `projection` defaults to seeded random `FeedbackMatrices`."""

    name = "dfa"
    measures_alignment = True

    def __init__(self, projection: FeedbackMatrices | CallableProjection | Callable | None = None) -> None:
        super().__init__()
        if projection is None:
            projection = FeedbackMatrices()
        elif not hasattr(projection, "project"):
            projection = CallableProjection(projection)
        self.projection = projection
        self._tape: list[tuple[FeedbackPoint, torch.Tensor]] = []
        self._measuring = False
        self._measured: list[tuple[str, torch.Tensor, list[int]]] = []  # (error point, y, tape indices)
        self._cuts: list[tuple[str, torch.Tensor, torch.Tensor, bool]] = []  # (point, output, cut input, fed)
        self._segment_start = 0

    # -- the hot path --------------------------------------------------------------------------
    def at_feedback_point(self, point: FeedbackPoint, h: torch.Tensor) -> torch.Tensor:
        if self._measuring:
            cut = h.detach().requires_grad_(h.requires_grad)
            self._cuts.append((point.mark_name, h, cut, point.feedback))
            return cut
        if h.requires_grad and point.feedback:
            self._tape.append((point, h))
        return h.detach()

    def at_error_point(self, point: ErrorPoint, y: torch.Tensor) -> torch.Tensor:
        if self._measuring:
            segment = list(range(self._segment_start, len(self._cuts)))
            self._segment_start = len(self._cuts)
            self._measured.append((point.mark_name, y, segment))
            return y
        tape, self._tape = self._tape, []
        if not tape:
            return y
        names = [p.mark_name for p, _ in tape]
        return _InjectFeedback.apply(self, point.mark_name, names, y, *(h for _, h in tape))

    def signals(self, key: str, e: torch.Tensor, names: list[str], h_meta) -> list[torch.Tensor]:
        """B_i e for every block output, reshaped to that output: one projection for all of them."""
        error = e.reshape(-1, 1) if e.dim() == 1 else e.reshape(-1, e.shape[-1])
        rows = error.shape[0]
        widths = []
        for name, (shape, _) in zip(names, h_meta):
            numel = shape.numel()
            if numel % rows:
                raise ValueError(
                    f"feedback point {name!r} of shape {tuple(shape)} cannot be fed per row of the error "
                    f"of {rows} rows: a block output must share the error's leading (batch) dimensions"
                )
            widths.append(numel // rows)
        projected = self.projection.project(key, error, names, widths)
        return [p.reshape(shape).to(dtype) for p, (shape, dtype) in zip(projected, h_meta)]

    def backward(self, loss: torch.Tensor) -> None:
        if self._tape:
            names = [p.mark_name for p, _ in self._tape]
            self._tape.clear()
            raise RuntimeError(f"feedback points {names} were not followed by an error point in the forward pass")
        loss.backward()

    # -- alignment -----------------------------------------------------------------------------
    def measured_step(self, compute_loss: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """One training step that also measures alignment; sets the same .grad as the hot path."""
        self._measuring, self._measured, self._cuts, self._segment_start = True, [], [], 0
        try:
            loss = compute_loss()
        finally:
            self._measuring = False
        cuts, measured = self._cuts, self._measured
        self._cuts, self._measured = [], []
        angles = measure_alignment(self.model, loss, cuts, measured, self.signals)
        return loss, angles

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "projection": self.projection.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.projection.load_state_dict(state["projection"])


METHODS: dict[str, type[Method]] = {"bp": BP, "dfa": DFA, "shallow": Shallow}


def build_method(cfg: Mapping[str, Any], seed: int) -> Method:
    """The method a run's config names (`method/<name>.yaml`)."""
    name = cfg["name"]
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    if name != "dfa":
        return METHODS[name]()
    fb = cfg.get("feedback", {}) or {}
    fb_seed = fb.get("seed")
    return DFA(
        FeedbackMatrices(
            layout=fb.get("layout", "shared"),
            distribution=fb.get("distribution", "uniform"),
            normalize=fb.get("normalize", True),
            seed=seed if fb_seed is None else int(fb_seed),
        )
    )
