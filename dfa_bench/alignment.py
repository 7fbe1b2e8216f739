"""Alignment: the angle between what DFA does and what backprop would do, on the same batch and weights.

On a measuring step the DFA method runs ONE forward pass in which every feedback point still cuts its
block output from the next block, but the cut input is made to require grad (only on these steps). From
that one graph, with the same dropout masks and no copy of the model:

- the true gradient at every block output follows by chaining autograd through the blocks, top to bottom;
- the true (BP) update of every parameter and the DFA update are each one autograd call;
- the DFA update is written to `.grad`, so the step trains exactly as the hot path would.

Reported in degrees (0 = same direction, 90 = orthogonal, 180 = opposite):
- `align/param/<name>`: angle between the DFA update and the BP gradient of each parameter below a
  feedback point (parameters above all of them get their true gradient and are not listed);
- `align/point/<name>`: angle between B_i e and the true gradient at each feedback point;
- `align/sample_cos/<name>`: the same two signals compared sample by sample (row by row of the feedback
  point's output): the mean cosine over the rows where both are non-zero. This is the companion paper's
  measure (arXiv 1906.04554); the angle above weighs samples by the size of their gradient.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in degrees between two tensors seen as flat vectors; NaN if either is zero."""
    a = a.detach().flatten().double()
    b = b.detach().flatten().double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return math.nan
    cos = torch.clamp(a @ b / (na * nb), -1.0, 1.0)
    return math.degrees(math.acos(cos.item()))


def sample_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine between matching rows (last dimension) of a and b, over rows where both are non-zero."""
    a = a.detach().reshape(-1, a.shape[-1]).double()
    b = b.detach().reshape(-1, b.shape[-1]).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    rows = (na > 0) & (nb > 0)
    if not rows.any():
        return math.nan
    return ((a[rows] * b[rows]).sum(1) / (na[rows] * nb[rows])).mean().item()


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def measure_alignment(
    model: nn.Module,
    loss: torch.Tensor,
    cuts: Sequence[tuple[str, torch.Tensor, torch.Tensor, bool]],
    measured: Sequence[tuple[str, torch.Tensor, list[int]]],
    signals: Callable,
) -> dict[str, float]:
    """Set the DFA update as .grad and return the alignment angles (see the module docstring).

    cuts: (feedback point name, block output h, cut input fed to the next block, whether the point receives
        feedback), in forward order.
    measured: (error point name, its tensor y, indices into cuts of the points it feeds).
    signals: the DFA method's projection, signals(key, e, names, h_meta) -> [B_i e].
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    live = [i for i, (_, h, _, _) in enumerate(cuts) if h.requires_grad]
    cut_inputs = [cuts[i][2] for i in range(len(cuts))]

    # True gradients at every error point (e) and, from the loss directly, at every cut input.
    leaves = [y for _, y, _ in measured] + [c for c in cut_inputs if c.requires_grad]
    grads = torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True)
    errors = grads[: len(measured)]
    at_cut: list[torch.Tensor | None] = [None] * len(cuts)
    it = iter(grads[len(measured) :])
    for i, c in enumerate(cut_inputs):
        if c.requires_grad:
            at_cut[i] = next(it)

    # Chain backprop through the blocks, top to bottom: a block only consumes earlier cuts.
    true_at_h: list[torch.Tensor | None] = [None] * len(cuts)
    for j in reversed(range(len(cuts))):
        h = cuts[j][1]
        true_at_h[j] = at_cut[j] if at_cut[j] is not None else torch.zeros_like(h)
        lower = [i for i in range(j) if cut_inputs[i].requires_grad]
        if h.requires_grad and lower:
            contrib = torch.autograd.grad(
                h, [cut_inputs[i] for i in lower], grad_outputs=true_at_h[j], retain_graph=True, allow_unused=True
            )
            for i, g in zip(lower, contrib):
                at_cut[i] = _add(at_cut[i], g)

    # DFA signals B_i e, one projection per error point.
    dfa_at_h: list[torch.Tensor | None] = [None] * len(cuts)
    for (key, y, indices), e in zip(measured, errors):
        indices = [i for i in indices if i in live and cuts[i][3]]
        if not indices or e is None:
            continue
        names = [cuts[i][0] for i in indices]
        meta = [(cuts[i][1].shape, cuts[i][1].dtype) for i in indices]
        for i, s in zip(indices, signals(key, e, names, meta)):
            dfa_at_h[i] = s

    top = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    fed = [i for i in live if dfa_at_h[i] is not None]
    none = [None] * len(params)
    dfa_block = none
    if fed:
        dfa_block = torch.autograd.grad([cuts[i][1] for i in fed], params, [dfa_at_h[i] for i in fed],
                                        retain_graph=True, allow_unused=True)
    bp_block = none
    if live:
        bp_block = torch.autograd.grad([cuts[i][1] for i in live], params, [true_at_h[i] for i in live],
                                       allow_unused=True)

    angles: dict[str, float] = {}
    for (name, p), g_top, g_dfa, g_bp in zip(named, top, dfa_block, bp_block):
        update = _add(g_top, g_dfa)
        if update is not None:
            p.grad = update if p.grad is None else p.grad + update
        if g_bp is not None:  # learns from below a feedback point (under DFA: from B_i e, or not at all)
            dfa_update = update if update is not None else torch.zeros_like(g_bp)  # no update: NaN angle
            angles[f"align/param/{name}"] = angle_deg(dfa_update, _add(g_top, g_bp))
    for i in fed:
        angles[f"align/point/{cuts[i][0]}"] = angle_deg(dfa_at_h[i], true_at_h[i])
        angles[f"align/sample_cos/{cuts[i][0]}"] = sample_cosine(dfa_at_h[i], true_at_h[i])
    return angles
