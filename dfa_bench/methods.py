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
- `DRTP`: Direct Random Target Projection (Frenkel et al. 2021): DFA's wiring, but what is projected is
  the one-hot target, not the error.
- `RandomFeedback`: a control. DFA's wiring, but the feedback carries no usable information, either
  through a matrix drawn afresh at every step (`control: redraw`) or by projecting noise of the error's
  size instead of the error (`control: noise`). It should learn no more than `shallow`.
- `FA` (feedback alignment, `dfa_bench.fa`): backprop in which every linear layer sends its gradient down
  through a fixed random matrix instead of its transposed weights.
- `DFAGNN`: DFA-GNN (Zhao et al., NeurIPS 2024): DFA for graph networks, whose error is spread over the
  graph before the projection, filled in on unlabelled nodes and filtered (see its docstring).

Methods know nothing of tasks: they see marks (`dfa_bench.marks`) and a loss.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dfa_bench.alignment import measure_alignment
from dfa_bench.errors import ConfigError
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


class DRTP(DFA):
    """Direct Random Target Projection: feedback point i receives B_i (-t) / n, t the one-hot target.

    The method sees no labels; it recovers the target from the error at the error point, which must be the
    gradient of a mean cross-entropy with respect to the logits: e = (p - t) / n with p in (0, 1), so the
    target class is where e is smallest (`target_from_error`). Rows whose error is zero (samples outside
    the loss, such as unlabelled graph nodes) receive nothing, and n counts the others. An error with
    several negative entries in a row (an embedding, a regression) is refused.
    """

    name = "drtp"

    def signals(self, key: str, e: torch.Tensor, names: list[str], h_meta) -> list[torch.Tensor]:
        return super().signals(key, target_from_error(key, e), names, h_meta)


def target_from_error(key: str, e: torch.Tensor) -> torch.Tensor:
    """-t / n from e = dL/dlogits of a mean cross-entropy (see `DRTP`), in e's shape.

    n is the number of rows in the loss (rows whose error is not zero), so that a loss over a subset of
    the rows (graph nodes with labels) gets the scale of its own mean. With softmax, t is the entry where
    e is smallest: the negative one, or, when p_t has rounded to 1, the only zero among positive entries.
    A row whose smallest value is shared by several entries has no recoverable target and gets nothing.
    A row with more than one negative entry cannot come from a cross-entropy: the run stops. A single
    output column is taken to be a sigmoid cross-entropy (its target is +1 where e < 0, -1 where e > 0).
    """
    error = (e.reshape(-1, 1) if e.dim() == 1 else e.reshape(-1, e.shape[-1])).float()
    in_loss = (error != 0).any(1)
    n = in_loss.sum().clamp_min(1)
    if error.shape[1] == 1:
        target = torch.sign(-error)
    else:
        if ((error < 0).sum(1) > 1).any():
            raise ConfigError(
                f"method=drtp needs the error point {key!r} to sit on the logits of a cross-entropy loss (it "
                "recovers the one-hot target from e = softmax - target); this error has rows with several negative "
                "entries. See the README's table of which tasks each method supports"
            )
        smallest = error.amin(1, keepdim=True)
        at_min = error == smallest
        clear = in_loss & (at_min.sum(1) == 1)
        target = (at_min & clear[:, None]).float()
    return (-target / n).to(e.dtype).reshape(e.shape)


class RandomFeedback(DFA):
    """Control: feedback with DFA's wiring and scale but no usable information (see the module docstring).

    `redraw`: B is drawn afresh (same distribution and scaling as DFA's) at every step, so B e carries the
    error, but in a direction no layer can align with. `noise`: DFA's fixed B projects Gaussian noise with
    the norm of each row of the error instead of the error.
    """

    name = "random_feedback"

    def __init__(self, control: str = "redraw", seed: int = 0, **feedback: Any) -> None:
        if control not in ("redraw", "noise"):
            raise ConfigError(f"random_feedback control must be 'redraw' or 'noise', got {control!r}")
        self.control, self.feedback_kwargs = control, feedback
        self.variant = None if control == "redraw" else control  # tables: "random_feedback (noise)"
        self.generator = torch.Generator().manual_seed(seed * 7919 + 17)
        super().__init__(FeedbackMatrices(seed=seed, **feedback))

    def signals(self, key: str, e: torch.Tensor, names: list[str], h_meta) -> list[torch.Tensor]:
        if self.control == "redraw":
            seed = int(torch.randint(0, 2**40, (1,), generator=self.generator))
            self.projection = FeedbackMatrices(seed=seed, **self.feedback_kwargs)
            return super().signals(key, e, names, h_meta)
        error = e.reshape(-1, e.shape[-1]) if e.dim() > 1 else e.reshape(-1, 1)
        noise = torch.randn(error.shape, generator=self.generator).to(error.device, error.dtype)
        noise *= error.norm(dim=1, keepdim=True) / noise.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return super().signals(key, noise.reshape(e.shape), names, h_meta)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "control": self.control, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])


class _InjectGraphFeedback(torch.autograd.Function):
    """DFA-GNN's error point: identity on y forward; backward, the method's error in place of e for the
    layers above, and the graph-spread projections for every recorded block output."""

    @staticmethod
    def forward(ctx, method: "DFAGNN", key: str, names: list[str], hops: list, operator, y: torch.Tensor,
                *hs: torch.Tensor):
        ctx.method, ctx.key, ctx.names, ctx.hops, ctx.operator = method, key, names, hops, operator
        ctx.y = y.detach()
        ctx.h_meta = [(h.shape, h.dtype) for h in hs]
        return y.view_as(y)

    @staticmethod
    def backward(ctx, e: torch.Tensor):
        method = ctx.method
        error = method.node_error(ctx.key, e, ctx.y, ctx.operator)
        if any(ctx.needs_input_grad[6:]):
            signals = method.graph_signals(ctx.key, error, ctx.names, ctx.h_meta, ctx.hops, ctx.operator)
        else:
            signals = [None] * len(ctx.h_meta)
        return (None, None, None, None, None, error, *signals)


class DFAGNN(DFA):
    """DFA-GNN (Zhao et al., "DFA-GNN: Forward Learning of Graph Neural Networks by Direct Feedback
    Alignment", NeurIPS 2024, arXiv 2406.02040): DFA with three additions, each of which can be switched off.

    With E the error at the error point (nodes x classes; for a mean cross-entropy over the labelled nodes,
    (softmax - onehot) / n_L on the labelled rows and 0 elsewhere):

    1. `pseudo_error` (their Sec. 4.2, Eq. 8): the labelled nodes' residuals are spread over the graph,
       Z(0) = E, Z(t+1) = (1 - alpha) E + alpha S Z(t) for `iterations` steps, and every unlabelled node
       j gets the pseudo-error eta z_j / |z_j|_1, eta the mean |e_i|_1 over labelled nodes (their
       rescaling; nodes the spread never reaches keep 0). Labelled rows keep their error. -> E^
       (The spreading stops early at a fixed point, Z(t+1) == Z(t) bit for bit: the same result.)
    2. `node_filter` (their Eq. 9): a node is kept when its corrected prediction softmax(y) - n_L E^ (the
       one-hot target on labelled nodes) has exactly one entry above `epsilon`; the other rows of E^ are
       zeroed. -> E^_f
    3. `topology` (their Sec. 4.1, Eqs. 4-5): the feedback point h hops below the output receives
       (S^T)^h E^_f B, the error carried back over the graph as far as the forward pass carried the
       features, instead of DFA's E^_f B.

    The layers above the last feedback point learn from E^_f in place of the true error (their Eq. 10:
    dW(L) = H_f^T E^_f), through ordinary autograd. With all three off this is `DFA` exactly (the same
    matrices, the same updates). The paper's "DFA" rows (Tables 2, 8) are topology on, the other two off.

    How the method gets the graph (methods never see tasks): the model describes it on its marks
    (`dfa_bench.marks`): the error point's `propagation` is the sparse operator S of the model's
    aggregation (the GCN models set D^-1/2 (A+I) D^-1/2), each feedback point's `hops` is how many times S
    is applied between it and the output. `topology` and `pseudo_error` need S, `topology` needs the hops;
    a model without them stops the run with a ConfigError. `node_filter` needs the prediction, so the
    error point must sit on the logits of a mean softmax cross-entropy (checked on the labelled rows, as
    DRTP checks). Labelled rows are recognized as the rows with a non-zero error (as in DRTP).

    Alignment is not measured (`measures_alignment = False`): the top layers' update is not the true
    gradient here, which the alignment measurement assumes.
    """

    name = "dfa_gnn"
    measures_alignment = False

    def __init__(self, projection: FeedbackMatrices | CallableProjection | Callable | None = None, *,
                 topology: bool = True, pseudo_error: bool = True, alpha: float = 0.1, iterations: int = 50,
                 node_filter: bool = True, epsilon: float = 0.5) -> None:
        super().__init__(projection)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"dfa_gnn alpha must lie in [0, 1], got {alpha}")
        if isinstance(iterations, bool) or not float(iterations).is_integer() or iterations < 0:
            raise ConfigError(f"dfa_gnn iterations must be an integer >= 0, got {iterations}")
        if not 0.0 <= float(epsilon) < 1.0:
            raise ConfigError(f"dfa_gnn epsilon must lie in [0, 1), got {epsilon}")
        self.topology, self.pseudo_error, self.node_filter = bool(topology), bool(pseudo_error), bool(node_filter)
        self.alpha, self.iterations, self.epsilon = float(alpha), int(iterations), float(epsilon)
        off = [label for label, on in (("topology", self.topology), ("pseudo-error", self.pseudo_error),
                                       ("node filter", self.node_filter)) if not on]
        self.variant = ("no " + ", no ".join(off)) if off else None  # the ablations: their own table columns
        self._operators: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (S, S csr, S^T csr)

    def at_error_point(self, point: ErrorPoint, y: torch.Tensor) -> torch.Tensor:
        if self._measuring:
            raise RuntimeError("method=dfa_gnn does not measure alignment (alignment.every=0)")
        tape, self._tape = self._tape, []
        if not tape and not (self.pseudo_error or self.node_filter):
            return y
        operator = point.propagation
        needs_operator = self.pseudo_error or (self.topology and tape)
        if needs_operator and operator is None:
            raise ConfigError(
                f"method=dfa_gnn needs the graph propagation operator of the model (its error point "
                f"{point.mark_name!r} carries none): use a graph model that carries one (gcn, gcn3, cheb3, gat3), or switch off "
                "method.topology and method.pseudo_error"
            )
        hops = [p.hops for p, _ in tape]
        if self.topology and any(h is None for h in hops):
            missing = [p.mark_name for p, _ in tape if p.hops is None]
            raise ConfigError(f"method=dfa_gnn with topology needs the model to say how many graph hops lie "
                              f"between each feedback point and the output; {missing} do not")
        names = [p.mark_name for p, _ in tape]
        return _InjectGraphFeedback.apply(self, point.mark_name, names, hops, operator, y, *(h for _, h in tape))

    # -- the three parts -------------------------------------------------------------------------
    def node_error(self, key: str, e: torch.Tensor, y: torch.Tensor, operator: torch.Tensor | None) -> torch.Tensor:
        """E^_f: the error with pseudo-errors on unlabelled nodes, filtered (each part when switched on)."""
        if not (self.pseudo_error or self.node_filter):
            return e
        if e.dim() != 2:
            raise ConfigError(f"method=dfa_gnn needs a (nodes x classes) error at {key!r}, got shape {tuple(e.shape)}")
        error = e.float()
        labelled = (error != 0).any(1)
        if self.pseudo_error and labelled.any():
            s = self._compressed(operator, transpose=False).to(error.device, error.dtype)
            z = error
            for _ in range(self.iterations):
                step = (1 - self.alpha) * error + self.alpha * (s @ z)
                if torch.equal(step, z):  # a fixed point: every later step gives the same values
                    break
                z = step
            eta = error[labelled].abs().sum(1).mean()
            size = z.abs().sum(1, keepdim=True)
            pseudo = torch.where(size > 0, z * (eta / size.clamp_min(torch.finfo(z.dtype).tiny)), torch.zeros_like(z))
            error = torch.where(labelled.unsqueeze(1), error, pseudo)
        if self.node_filter:
            corrected = torch.softmax(y.float(), dim=1) - labelled.sum() * error
            if labelled.any():
                rows = corrected[labelled]
                onehot = torch.nn.functional.one_hot(rows.argmax(1), rows.shape[1]).to(rows.dtype)
                if (rows - onehot).abs().max() > 1e-3:
                    raise ConfigError(
                        f"method=dfa_gnn's node filter needs the error point {key!r} on the logits of a mean "
                        "softmax cross-entropy over the labelled nodes (softmax(y) - n * e must be the one-hot "
                        "target on them); switch it off with method.node_filter=false"
                    )
            keep = (corrected > self.epsilon).sum(1) == 1
            error = error * keep.unsqueeze(1).to(error.dtype)
        return error.to(e.dtype)

    def graph_signals(self, key: str, error: torch.Tensor, names: list[str], h_meta, hops: list,
                      operator: torch.Tensor | None) -> list[torch.Tensor]:
        """(S^T)^h_i E B_i for every block output i (E B_i without topology): one projection per distinct h."""
        if not self.topology or not names:
            return self.signals(key, error, names, h_meta)
        if error.dim() != 2 or error.shape[0] != operator.shape[1]:
            raise ConfigError(f"method=dfa_gnn needs a (nodes x classes) error at {key!r} over the "
                              f"{operator.shape[1]} nodes of its graph operator, got shape {tuple(error.shape)}")
        st = self._compressed(operator, transpose=True).to(error.device, error.dtype)
        spread = {0: error}
        for k in range(1, max(hops) + 1):
            spread[k] = st @ spread[k - 1]
        by_hops = {k: self.signals(key, spread[k], names, h_meta) for k in set(hops)}
        return [by_hops[k][i] for i, k in enumerate(hops)]

    def _compressed(self, operator: torch.Tensor, transpose: bool) -> torch.Tensor:
        """S or S^T in compressed sparse rows (several times faster to multiply than COO on a CPU), kept
        while the model hands over the same operator."""
        if self._operators is None or self._operators[0] is not operator:
            coo = operator.coalesce() if operator.layout == torch.sparse_coo else operator.to_sparse_coo().coalesce()
            with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is not
                warnings.simplefilter("ignore", UserWarning)
                self._operators = (operator, coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr())
        return self._operators[2 if transpose else 1]

    def measured_step(self, compute_loss: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise RuntimeError("method=dfa_gnn does not measure alignment (alignment.every=0)")


METHODS = ("bp", "dfa", "shallow", "fa", "drtp", "random_feedback", "dfa_gnn")


# DFA-GNN's settings tuned per dataset (their Table 6), Cora's as the defaults.
DFAGNN_DEFAULTS = {"alpha": 0.1, "iterations": 50, "epsilon": 0.5}


def _dataset_tuned(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    """method.<key>, or when it is null the dataset's tuned value, `dataset.dfa_gnn.<key>` of the run's config
    (the DFA-GNN experiment files set it), else `default`. Settings tuned per dataset live with the dataset,
    as the GAE's epochs do, so that one method's runs on several datasets share one method config (and one
    table row); the value a run used is in its config.yaml either way."""
    value = cfg.get(key)
    if value is not None:
        return value
    if isinstance(cfg, DictConfig):
        try:
            value = OmegaConf.select(cfg, f"..dataset.dfa_gnn.{key}", default=None)
        except Exception:  # noqa: BLE001 - a method config on its own, without a run's config around it
            value = None
    return default if value is None else value


def build_method(cfg: Mapping[str, Any], seed: int) -> Method:
    """The method a run's config names (`method/<name>.yaml`)."""
    name = cfg["name"]
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    fb = cfg.get("feedback", {}) or {}
    fb_seed = seed if fb.get("seed") is None else int(fb["seed"])
    if name == "fa":
        from dfa_bench.fa import FA  # fa.py builds on this module

        return FA(distribution=fb.get("distribution", "uniform"), seed=fb_seed)
    if name == "bp":
        return BP()
    if name == "shallow":
        return Shallow()
    drawing = dict(layout=fb.get("layout", "shared"), distribution=fb.get("distribution", "uniform"),
                   normalize=fb.get("normalize", True))
    if name == "random_feedback":
        return RandomFeedback(control=cfg.get("control", "redraw"), seed=fb_seed, **drawing)
    if name == "dfa_gnn":
        tuned = {key: _dataset_tuned(cfg, key, default) for key, default in DFAGNN_DEFAULTS.items()}
        return DFAGNN(FeedbackMatrices(seed=fb_seed, **drawing), topology=cfg.get("topology", True),
                      pseudo_error=cfg.get("pseudo_error", True), node_filter=cfg.get("node_filter", True),
                      **tuned)
    return (DFA if name == "dfa" else DRTP)(FeedbackMatrices(seed=fb_seed, **drawing))
