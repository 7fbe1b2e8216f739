"""Fixed random feedback matrices B_i and the projection of the global error through them.

How the matrices are drawn and scaled (config group `method/dfa.yaml`, key `feedback`):

- `layout: shared` is what the paper's reference implementation (TinyDFA, lightonai/dfa-scales-to-
  modern-deep-learning) does: ONE matrix of shape (error width, widest feedback point); feedback point i
  uses its first d_i columns, so two points of equal width receive identical feedback.
  `layout: independent` gives every feedback point its own block of columns (its own B_i).
- `distribution: uniform` draws U[-1, 1) as TinyDFA does; `gaussian` draws N(0, 1) as the companion
  paper's code (principled-dfa-training) does.
- `normalize: true` divides B by sqrt(widest feedback point), which is TinyDFA's scaling of the projection
  (`rp /= sqrt(max_feedback_size)`). "Widest" is the largest per-sample width d_i among the feedback
  points served by one error point. The rule is the same for drawn and for given matrices (below).

Either way all feedback points of one error point are served by ONE matrix product e @ M; the points
take their column slices of the result. Matrices are drawn on the CPU from a seeded generator the first
time an error point is seen (the widths are known only then), so the same seed gives the same matrices
on any device, and they are saved and restored with `state_dict` / `load_state_dict`.

A user can bring their own projection (the paper's motivation is hardware, such as optical co-processors,
that performs the random projection):

- `FeedbackMatrices(matrices={point name: tensor of shape (error width, d_i)})`: one B_i per feedback
  point, used in place of the drawn columns; or `matrices=<one tensor>`, a whole matrix laid out as the
  drawn one would be (`shared`: shape (error width, widest), point i takes its first d_i columns, which
  is TinyDFA's raw matrix; `independent`: shape (error width, sum of d_i), the points' blocks in the
  model's order). Given matrices are RAW values: with `normalize=True` (the default) they are divided by
  sqrt(widest) exactly as drawn ones are, so TinyDFA's U[-1, 1) matrix passed as is gives the same
  update as the drawn matrix with the same values. Pass `normalize=False` for matrices that already
  carry the scale they should be used with. `matrix_for` returns the matrix after scaling.
- any object with a `project(key, error, names, widths)` method, given to `dfa_bench.methods.DFA`
  (`CallableProjection` wraps a plain function): its output is used as is (no normalization).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from dfa_bench.errors import ConfigError


@dataclass
class _Layout:
    matrix: torch.Tensor  # (error width, columns)
    columns: dict[str, tuple[int, int]]  # point name -> (start, width)


class FeedbackMatrices:
    """The random matrices of a DFA run, one layout per error point."""

    def __init__(
        self,
        layout: str = "shared",
        distribution: str = "uniform",
        normalize: bool = True,
        seed: int = 0,
        matrices: Mapping[str, torch.Tensor] | torch.Tensor | None = None,
    ) -> None:
        if layout not in ("shared", "independent"):
            raise ConfigError(f"feedback layout must be 'shared' or 'independent', got {layout!r}")
        if distribution not in ("uniform", "gaussian"):
            raise ConfigError(f"feedback distribution must be 'uniform' or 'gaussian', got {distribution!r}")
        self.layout = layout
        self.distribution = distribution
        self.normalize = normalize
        self.seed = seed
        if matrices is None or isinstance(matrices, torch.Tensor):
            self._given = matrices
        else:
            self._given = dict(matrices)
        self._layouts: dict[str, _Layout] = {}
        self._on_device: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    # -- drawing -------------------------------------------------------------------------------
    def _draw(self, key: str, out_dim: int, names: Sequence[str], widths: Sequence[int]) -> _Layout:
        unique: dict[str, int] = {}
        for name, width in zip(names, widths):
            unique.setdefault(name, width)
        widest = max(unique.values())
        if self.layout == "shared":
            n_cols = widest
            columns = {name: (0, width) for name, width in unique.items()}
        else:
            columns, n_cols = {}, 0
            for name, width in unique.items():
                columns[name] = (n_cols, width)
                n_cols += width
        if isinstance(self._given, torch.Tensor):  # one whole matrix, laid out as a drawn one
            if tuple(self._given.shape) != (out_dim, n_cols):
                raise ValueError(
                    f"the feedback matrix has shape {tuple(self._given.shape)}; error point {key!r} with layout "
                    f"{self.layout!r} needs ({out_dim}, {n_cols})"
                )
            matrix = self._given.detach().float().cpu().clone()
        elif self._given is not None:  # one matrix per feedback point
            missing = [n for n in unique if n not in self._given]
            if missing:
                raise KeyError(f"no feedback matrix was given for feedback point(s) {missing}")
            blocks, columns, start = [], {}, 0
            for name, width in unique.items():
                b = self._given[name]
                if tuple(b.shape) != (out_dim, width):
                    raise ValueError(
                        f"feedback matrix for {name!r} has shape {tuple(b.shape)}, expected ({out_dim}, {width})"
                    )
                blocks.append(b.detach().float().cpu())
                columns[name] = (start, width)
                start += width
            matrix = torch.cat(blocks, dim=1)
        else:
            matrix = self._random(key, out_dim, n_cols)
        if self.normalize:  # the same rule for given and drawn matrices
            matrix /= math.sqrt(widest)
        return _Layout(matrix, columns)

    def _random(self, key: str, out_dim: int, n_cols: int) -> torch.Tensor:
        # One generator per error point, seeded from the run's feedback seed and the point's name, so
        # adding a second error point to a model does not change the first one's matrices.
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + _stable_hash(key))
        if self.distribution == "uniform":
            return torch.rand(out_dim, n_cols, generator=gen) * 2 - 1
        return torch.randn(out_dim, n_cols, generator=gen)

    # -- projecting ----------------------------------------------------------------------------
    def project(
        self, key: str, error: torch.Tensor, names: Sequence[str], widths: Sequence[int]
    ) -> list[torch.Tensor]:
        """Project `error` (rows x error width) to every feedback point: one matrix product."""
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = self._draw(key, error.shape[1], names, widths)
        if layout.matrix.shape[0] != error.shape[1]:
            raise ValueError(
                f"error point {key!r} has width {error.shape[1]}, its feedback matrix expects {layout.matrix.shape[0]}"
            )
        cache_key = (key, error.device, error.dtype)
        matrix = self._on_device.get(cache_key)
        if matrix is None:
            matrix = self._on_device[cache_key] = layout.matrix.to(error.device, error.dtype)
        projected = error @ matrix
        out = []
        for name, width in zip(names, widths):
            if name not in layout.columns:
                raise KeyError(f"feedback point {name!r} was not seen when the matrices of {key!r} were drawn")
            start, known = layout.columns[name]
            if known != width:
                raise ValueError(f"feedback point {name!r} changed width from {known} to {width}")
            out.append(projected[:, start : start + width])
        return out

    def matrix_for(self, key: str, name: str) -> torch.Tensor:
        """B_i of one feedback point, shape (error width, d_i): what `project` multiplies by."""
        layout = self._layouts[key]
        start, width = layout.columns[name]
        return layout.matrix[:, start : start + width]

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "layout": self.layout,
            "distribution": self.distribution,
            "normalize": self.normalize,
            "seed": self.seed,
            "matrices": {k: {"matrix": v.matrix, "columns": dict(v.columns)} for k, v in self._layouts.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.layout, self.distribution = state["layout"], state["distribution"]
        self.normalize, self.seed = state["normalize"], state["seed"]
        self._layouts = {
            k: _Layout(v["matrix"].float().cpu(), {n: tuple(c) for n, c in v["columns"].items()})
            for k, v in state["matrices"].items()
        }
        self._on_device.clear()


class CallableProjection:
    """Wrap `fn(error, widths) -> list of (rows x d_i) tensors` as a projection, e.g. a hardware one."""

    def __init__(self, fn: Callable[[torch.Tensor, list[int]], Sequence[torch.Tensor]]) -> None:
        self.fn = fn

    def project(self, key: str, error: torch.Tensor, names: Sequence[str], widths: Sequence[int]) -> list[torch.Tensor]:
        out = list(self.fn(error, list(widths)))
        for t, width in zip(out, widths):
            if t.shape != (error.shape[0], width):
                raise ValueError(f"projection returned shape {tuple(t.shape)}, expected ({error.shape[0]}, {width})")
        return out

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Mapping) -> None:
        pass


def _stable_hash(text: str) -> int:
    """A hash of a string that is the same in every process (Python's hash() is salted)."""
    h = 0
    for ch in text.encode():
        h = (h * 131 + ch) % 1_000_000_007
    return h
