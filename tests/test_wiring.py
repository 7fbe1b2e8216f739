"""Which parameters each method trains, on every real model of every task, with one step on real data.

For each model (built by its task, `build_task(cfg, device).build_model()`, loss `task.loss`) and each
method, one training step on a tiny batch of real data checks:

- `bp`: every parameter gets a non-zero gradient, the same one as with no method attached;
- `shallow`: exactly the parameters listed below as learning above the feedback points get one, and it is
  their true (backprop) gradient; everything below a feedback point gets none;
- `dfa`, `drtp`: every parameter gets a non-zero gradient; the parameters above the feedback points get
  their true gradient, those below get something else (the injected B_i e or B_i t);
- `fa`: every parameter gets a non-zero gradient; the true one above, another one below;
- `dfa`, `fa`, `drtp`: the hot path's `.grad` (`method.backward`) equals the alignment-measuring step's
  (`method.measured_step`) on the same batch, weights and dropout masks, and the measuring step reports an
  angle for exactly the parameters below the feedback points;
- `drtp` where the README's support table says it does not run (gae, nerf, the LM with its error before
  the vocabulary projection): one `ConfigError`.

The expected sets are written out per model from its architecture (README, model docstrings), not
computed by the code under test. Every step compares methods on the same weights and seeds the RNG before
each forward pass, so all methods see the same dropout masks, ray samples and batch.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from dfa_bench.cli import CONF_DIR
from dfa_bench.errors import ConfigError
from dfa_bench.marks import FeedbackPoint
from dfa_bench.methods import build_method
from dfa_bench.tasks import build_task
from tests.conftest import data_root, require

CORA = ("planetoid", "Cora", "raw")
CRITEO = ("criteo", "criteo_kaggle_train_head10000.txt")
WIKI = ("wikitext", "wikitext-2", "wiki.train.tokens")
LEGO = ("nerf", "nerf_synthetic", "lego")
NERF_PARTS = ("coarse", "fine")


@dataclass(frozen=True)
class Case:
    """One real model. `top`: parameter-name prefixes that learn from their true gradient under DFA and
    shallow (every path from them to the loss avoids all feedback points). `partial`: parameters with one
    path that avoids the feedback points and one through a cut without feedback: they learn under shallow
    and DFA, but only from the first path (with `partial_feedback`, the second path's point gives feedback:
    under DFA they learn from both). Every other parameter sits below a feedback point."""

    overrides: tuple[str, ...]
    data: tuple[str, ...]
    top: tuple[str, ...]
    partial: tuple[str, ...] = ()
    partial_feedback: bool = False
    drtp: bool = True  # the README's support table
    may_start_dead: bool = False  # NeRF: initial weights may render nothing (see _alive)

    def kind(self, name: str) -> str:
        if name.startswith(self.top):
            return "top"
        if self.partial and name.startswith(self.partial):
            return "partial"
        return "below"


RECSYS = ("task=recsys", "dataset=criteo_sample", "task.batch_size=64")
LM = ("experiment=lm_tiny", "dataset.max_train_chars=120000")  # the slice tests/test_lm.py caches too
NERF_TOP = tuple(f"{part}.{layer}." for part in NERF_PARTS for layer in ("sigma", "rgb"))

CASES = {
    # gcn: conv(in->hidden), act, dropout, [hidden], conv(hidden->classes), [logits]
    "gcn": Case(("task=gcn", "model=gcn"), CORA, top=("conv2.",)),
    "cheb": Case(("task=gcn", "model=cheb"), CORA, top=("conv2.",)),
    "gat": Case(("task=gcn", "model=gat"), CORA, top=("conv2.",)),
    # dna: lin1, [points.0], DNAConv, [points.1], DNAConv, [points.2], lin2 (2 layers of 32, not 5 of 128:
    # CPU time; the wiring is the same)
    "dna": Case(("task=gcn", "model=dna", "model.layers=2", "model.hidden=32"), CORA, top=("lin2.",)),
    "dna_as_run": Case(("task=gcn", "model=dna_as_run", "model.layers=2", "model.hidden=32"), CORA, top=("lin2.",)),
    "gat_as_run": Case(("task=gcn", "model=gat_as_run"), CORA, top=("conv2.",)),
    "spline": Case(("task=gcn", "model=spline"), CORA, top=("conv2.",)),
    # gcn3: GCNConv, [points.0], GCNConv, [points.1], GCNConv
    "gcn3": Case(("task=gcn", "model=gcn3"), CORA, top=("convs.2.",)),
    # cheb3, gat3: the same layout with ChebConv and GATConv (DFA-GNN's Table 4)
    "cheb3": Case(("task=gcn", "model=cheb3"), CORA, top=("convs.2.",)),
    "gat3": Case(("task=gcn", "model=gat3"), CORA, top=("convs.2.",)),
    # gae: GCNConv, ReLU, [encoder.hidden], GCNConv, [encoder.embedding]
    "gae_gcn": Case(("task=gae", "model=gae_gcn"), CORA, top=("encoder.conv2.",), drtp=False),
    # fm: no feedback point, every parameter is above
    "fm": Case((*RECSYS, "model=fm"), CRITEO, top=("linear.", "embedding.")),
    # deepfm: linear + FM(embedding) + MLP(embedding through a cut without feedback), feedback after each block
    "deepfm": Case((*RECSYS, "model=deepfm"), CRITEO, top=("linear.", "mlp.out."), partial=("embedding.",)),
    # the same with a feedback point on the MLP's input: the embeddings get B e besides the FM's gradient
    "deepfm_embedding_feedback": Case((*RECSYS, "model=deepfm_embedding_feedback"), CRITEO,
                                      top=("linear.", "mlp.out."), partial=("embedding.",), partial_feedback=True),
    # deepcross: [embedded], cross layers with [cross_points], MLP with its points, [stack], out
    "deepcross": Case((*RECSYS, "model=deepcross"), CRITEO, top=("out.",)),
    # autoint: linear; [embedded]; attention, MLP and residual below points; attention_out above [attended]
    "autoint": Case((*RECSYS, "model=autoint"), CRITEO, top=("linear.", "attention_out.", "mlp.out.")),
    # afn: linear; embedding and lnn below [lnn_out]; MLP blocks below their points; mlp.out above
    # (an LNN of 64 units, not 1,500: the MLP's first layer would read 15,000 values; the wiring is the same)
    "afn": Case((*RECSYS, "model=afn", "model.lnn_dim=64"), CRITEO, top=("linear.", "mlp.out.")),
    # transformer: embedding and blocks below [blocks.i.out] (micro: also attended, ff_hidden); head above
    "transformer_macro": Case((*LM, "dfa.placement=macro"), WIKI, top=("head.",), drtp=False),
    "transformer_micro": Case((*LM, "dfa.placement=micro"), WIKI, top=("head.",), drtp=False),
    "transformer_after_vocab": Case((*LM, "dfa.placement=macro", "dfa.error_after_vocab=true"), WIKI,
                                    top=("head.",)),
    # nerf: trunk layers, feature and view layers below their points; sigma and rgb above
    "nerf_tiny": Case(("experiment=nerf_tiny", "task.rays=32"), LEGO, top=NERF_TOP, drtp=False,
                      may_start_dead=True),
    "nerf": Case(("task=nerf", "model=nerf", "dataset.downscale=20", "task.rays=8"), LEGO, top=NERF_TOP,
                 drtp=False, may_start_dead=True),
    "nerf_as_run": Case(("task=nerf", "model=nerf_as_run", "dataset.downscale=20", "task.rays=8"), LEGO,
                        top=NERF_TOP, drtp=False, may_start_dead=True),
    # mlp: 3 x (Linear, tanh, [points.i]), head
    "mlp": Case(("task=image", "dataset=digits", "task.batch_size=32"), (), top=("head.",)),
}


# -- building tasks, models and steps --------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(cache_root):
    """Tasks built once per (model, tuning); the NeRF scene is read from disk once for all NeRF models."""
    import dfa_bench.tasks.nerf as nerf_task

    patch = pytest.MonkeyPatch()
    patch.setattr(nerf_task, "load_blender", functools.lru_cache(maxsize=2)(nerf_task.load_blender))
    yield World(cache_root)
    patch.undo()


class World:
    def __init__(self, cache_root):
        self.cache_root = cache_root
        self.tasks: dict = {}
        self.refs: dict = {}

    @functools.cache
    def cfg(self, name: str, method: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=[
                f"data_root={data_root()}", f"cache_root={self.cache_root}", "progress=false", "seed=0",
                f"method={method}", *CASES[name].overrides])

    def task(self, name: str, tuning: str):
        """The task of a case with the BP or the DFA settings (shallow, fa, drtp use the DFA ones)."""
        key = (name, tuning)
        if key not in self.tasks:
            case = CASES[name]
            if case.data:
                require(*case.data)
            self.tasks[key] = build_task(self.cfg(name, tuning), torch.device("cpu"))
        return self.tasks[key]

    def reference(self, name: str, tuning: str):
        """(initial weights, batch) shared by every method of a case and tuning."""
        key = (name, tuning)
        if key not in self.refs:
            task = self.task(name, tuning)
            _seed(1)
            batch = next(iter(task.train_batches()))
            for seed in range(20):
                torch.manual_seed(seed)
                model = task.build_model()
                if not CASES[name].may_start_dead or _alive(task, model, batch):
                    break
            self.refs[key] = ({k: v.clone() for k, v in model.state_dict().items()}, batch)
        return self.refs[key]

    def model(self, name: str, tuning: str, method: str | None):
        task = self.task(name, tuning)
        state, batch = self.reference(name, tuning)
        torch.manual_seed(0)
        model = task.build_model()
        model.load_state_dict(state)
        model.train()
        m = None
        if method is not None:
            m = build_method(self.cfg(name, method).method, 0).attach(model)
        return task, model, m, batch

    def step(self, name: str, method: str | None, tuning: str = "dfa", measured: bool = False):
        """.grad of every parameter after one step: {name: tensor or None}, and the measured angles."""
        task, model, m, batch = self.model(name, tuning, method)
        _seed(2)  # the same dropout masks, ray samples and negative edges for every method
        angles = {}
        if measured:
            _, angles = m.measured_step(lambda: task.loss(model, batch))
        else:
            loss = task.loss(model, batch)
            (m.backward if m is not None else torch.Tensor.backward)(loss)
        grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}
        return grads, angles, model

    @functools.cache
    def true_gradient(self, name: str) -> dict:
        """Backprop's gradient with the DFA settings (the same dropout as dfa, shallow, fa, drtp)."""
        return self.step(name, "bp")[0]


def _alive(task, model, batch) -> bool:
    """Whether every parameter gets a backprop gradient on this batch.

    A NeRF network whose density output is <= 0 at every sample renders nothing (alpha = 0), so all its
    parameters get a zero gradient under every method and it never learns. Some initial weights start so
    on lego (e.g. model=nerf at seed 0: the fine network); the wiring is checked on weights that do not.
    """
    _seed(2)
    task.loss(model, batch).backward()
    alive = all(_nonzero(p.grad) for p in model.parameters())
    model.zero_grad(set_to_none=True)
    return alive


def _seed(seed: int) -> None:
    """Every random source a forward pass draws from (PyG's negative sampling uses Python's random)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _nonzero(g) -> bool:
    return g is not None and bool(torch.isfinite(g).all()) and g.abs().sum().item() > 0


def _same(a, b) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-7 * b.abs().max().item())


def _differs(a, b) -> bool:
    """Clearly another direction or size, not a rounding difference."""
    return (a - b).norm().item() > 1e-3 * b.norm().item()


def _params(case_name, method):
    return pytest.param(case_name, method, id=f"{case_name}-{method}")


# -- (a) which parameters get a gradient ----------------------------------------------------------------
@pytest.mark.parametrize("name, method", [_params(n, m) for n in CASES
                                          for m in ("bp", "shallow", "dfa", "fa", "drtp")])
def test_which_parameters_learn(world, name, method):
    case = CASES[name]
    if method == "drtp" and not case.drtp:
        task, model, m, batch = world.model(name, "dfa", "drtp")
        _seed(2)
        with pytest.raises(ConfigError, match="method=drtp needs the error point .* cross-entropy"):
            m.backward(task.loss(model, batch))
        return

    if method == "bp":  # with the BP settings; attached or not, the marks are the identity
        grads, _, _ = world.step(name, "bp", tuning="bp")
        plain, _, _ = world.step(name, None, tuning="bp")
        silent = [n for n, g in grads.items() if not _nonzero(g)]
        assert not silent, f"under bp these parameters get no gradient: {silent}"
        for n, g in grads.items():
            torch.testing.assert_close(g, plain[n], msg=f"bp attached vs plain autograd: {n}")
        return

    grads, _, _ = world.step(name, method)
    true = world.true_gradient(name)
    kinds = {n: case.kind(n) for n in grads}
    assert "top" in kinds.values(), f"no parameter matches the top prefixes {case.top}: {sorted(grads)}"

    if method == "shallow":
        learning = {n for n, g in grads.items() if g is not None}
        assert learning == {n for n, k in kinds.items() if k != "below"}
        for n in learning:
            assert _nonzero(grads[n]), n
            if kinds[n] == "top":
                assert _same(grads[n], true[n]), f"{n}: shallow should give the true gradient above the cuts"
            else:  # partial: only the path without the cut
                assert _differs(grads[n], true[n]), n
        return

    silent = [n for n, g in grads.items() if not _nonzero(g)]
    assert not silent, f"under {method} these parameters get no gradient: {silent}"
    for n, g in grads.items():
        if kinds[n] == "top":
            assert _same(g, true[n]), f"{n}: {method} should give the true gradient above the feedback points"
        else:
            assert _differs(g, true[n]), f"{n}: {method} gives the backprop gradient below a feedback point"
    if method in ("dfa", "drtp"):
        for n in (n for n, k in kinds.items() if k == "partial"):  # e.g. DeepFM's embeddings: the FM term only
            shallow, _, _ = world.step(name, "shallow")
            if case.partial_feedback:
                assert _differs(grads[n], shallow[n]), f"{n}: the feedback point should add B e under {method}"
            else:
                assert _same(grads[n], shallow[n]), f"{n}: the cut without feedback should pass nothing under {method}"


# -- (b) the hot path and the alignment-measuring step set the same .grad ---------------------------------
@pytest.mark.parametrize("name, method", [_params(n, m) for n in CASES for m in ("dfa", "fa", "drtp")
                                          if m != "drtp" or CASES[n].drtp])
def test_hot_path_equals_measured_step(world, name, method):
    case = CASES[name]
    hot, _, model = world.step(name, method)
    measured, angles, _ = world.step(name, method, measured=True)
    for n, g in hot.items():
        assert (g is None) == (measured[n] is None), n
        if g is not None:
            torch.testing.assert_close(measured[n], g, rtol=1e-5, atol=1e-6 * max(g.abs().max().item(), 1e-30),
                                       msg=f"{method} {n}: measured step vs hot path")
    # The measuring step reports an angle for every parameter below a feedback point, and for no other.
    below = {n for n in hot if case.kind(n) != "top"}
    assert {k.removeprefix("align/param/") for k in angles if k.startswith("align/param/")} == below
    points = {n for n, mod in model.named_modules() if isinstance(mod, FeedbackPoint)
              and (mod.feedback or method == "fa")}
    assert {k.removeprefix("align/point/") for k in angles if k.startswith("align/point/")} == points
    angles = [v for k, v in angles.items() if k.startswith(("align/param/", "align/point/"))]
    assert all(0.0 <= v <= 180.0 for v in angles)  # numbers, not NaN (NaN: a zero update or gradient)
