"""The config's schema: what each key may hold, checked before a run writes anything.

Two checks, each ending in one `ConfigError` line that names the key, the value and what is allowed:

- `check_overrides(cfg, base, overrides)`, on the command line's overrides (the CLI runs it):
  * a key that is not in the config is refused, also when it is added with `+key=value` (a misspelled
    hyperparameter such as `+model.settings.dfa.droput=0.5` would otherwise be silently ignored); the
    error lists the keys that exist at that level;
  * a value must have the type of the key's value in the config the override changes (`base`: the
    config composed from the same config-group choices without value overrides): an integer key takes
    an integer (`task.epochs=1.5` is refused, not truncated), a number key takes a number
    (`lr=1` is fine), a boolean key takes true or false, a list key a list.
- `validate(cfg)`, on every run's resolved config (the runner runs it, so that tests and the API are
  checked too): the value rules of `RULES`, matched by key pattern (`*` matches one key level), e.g.
  `task.epochs` an integer >= 1 or null, `model.settings.*.lr` a number > 0, every `*dropout*` in [0, 1),
  `task.precision` one of auto, bf16, tf32, fp32.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dfa_bench.errors import ConfigError
from dfa_bench.identity import flatten


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


@dataclass(frozen=True)
class Rule:
    """What a key may hold: `test(value)` is true for an allowed value; `allowed` says it in words."""

    test: Callable[[Any], bool]
    allowed: str
    nullable: bool = False
    lists: bool = False  # a list of allowed values is allowed too

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.lists and isinstance(value, (list, tuple, ListConfig)):
            return all(self.test(v) for v in value)
        return self.test(value)


def integer(minimum: int, nullable: bool = False) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}" + (" or null" if nullable else ""),
                nullable)


def positive(nullable: bool = False) -> Rule:
    return Rule(lambda v: _is_number(v) and v > 0, "a number > 0" + (" or null" if nullable else ""), nullable)


def fraction(what: str = "a number in [0, 1)") -> Rule:
    return Rule(lambda v: _is_number(v) and 0 <= v < 1, what)


def choice(*values: str) -> Rule:
    return Rule(lambda v: v in values, "one of " + ", ".join(values))


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")

RULES: dict[str, Rule] = {
    "mode": choice("train", "sample", "eval"),
    "seed": integer(0),
    "resume": BOOLEAN,
    "deterministic": BOOLEAN,
    "progress": BOOLEAN,
    "checkpoint_every": integer(0),
    "threads": integer(1, nullable=True),
    "alignment.every": integer(0),
    "task.epochs": integer(1, nullable=True),
    "task.iterations": integer(1, nullable=True),
    "task.patience": integer(1, nullable=True),
    "task.batch_size": integer(1, nullable=True),
    "task.eval_batch_size": integer(1),
    "task.context": integer(1),
    "task.rays": integer(1, nullable=True),
    "task.chunk": integer(1),
    "task.eval_every": integer(1),
    "task.val_views": integer(1),
    "task.workers": integer(0),
    "task.tsne": BOOLEAN,
    "task.lr": positive(nullable=True),
    "dataset.rows": integer(100),
    "dataset.teacher_seed": integer(0),
    "task.val_fraction": Rule(lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "task.precision": choice("auto", "bf16", "tf32", "fp32"),
    "model.settings.*.lr": positive(nullable=True),
    "model.settings.*.weight_decay": Rule(lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "model.settings.*.*dropout": Rule(lambda v: _is_number(v) and 0 <= v < 1,
                                      "a number in [0, 1) (or a list of them)", lists=True),
    "model.settings.*.momentum": fraction(),
    "model.settings.*.epochs": integer(1),
    "model.settings.*.patience": integer(1),
    "model.settings.*.batch": integer(1),
    "model.settings.*.warmup": integer(0),
    "model.settings.*.beta2": fraction(),
    "model.dropout": fraction(),
    "model.grad_clip": positive(nullable=True),
    "method.control": choice("redraw", "noise"),
    "method.feedback.layout": choice("shared", "independent"),
    "method.feedback.distribution": choice("uniform", "gaussian"),
    "method.feedback.normalize": BOOLEAN,
    "method.feedback.seed": integer(0, nullable=True),
    "method.topology": BOOLEAN,
    "method.pseudo_error": BOOLEAN,
    "method.node_filter": BOOLEAN,
    "method.alpha": Rule(lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1] or null", nullable=True),
    "method.iterations": integer(0, nullable=True),
    "method.epsilon": Rule(lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1] or null", nullable=True),
    "dfa.placement": choice("macro", "micro"),
    "dfa.error_after_vocab": BOOLEAN,
    "logger.mode": choice("offline", "online", "disabled"),
}


def _show(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def validate(cfg: DictConfig | Mapping) -> None:
    """Check every key that a rule of `RULES` matches (see the module docstring)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    for key, value in flatten(container).items():
        for pattern, rule in RULES.items():
            if fnmatch.fnmatchcase(key, pattern) and not rule.ok(value):
                raise ConfigError(f"{key}={_show(value)}: expected {rule.allowed}")


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true or false"
    if _is_int(value):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (list, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a config group of keys"
    if isinstance(value, str):
        return "a string"
    return None


def _fits(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return _is_number(new)
    return _kind(old) == _kind(new)


def check_overrides(cfg: DictConfig, base: DictConfig, overrides: list[tuple[str, bool]]) -> None:
    """`overrides`: (key, added with +) for each value override of the command line (groups excluded)."""
    for key, added in overrides:
        parent, _, leaf = key.rpartition(".")
        holder = OmegaConf.select(base, parent) if parent else base
        exists = isinstance(holder, DictConfig) and leaf in holder
        if not exists:
            known = sorted(str(k) for k in holder.keys()) if isinstance(holder, DictConfig) else []
            where = f" of {parent}" if parent else ""
            hint = f"; the keys{where} are: {', '.join(known)}" if known else ""
            raise ConfigError(f"{key}: unknown key{hint}")
        old, new = OmegaConf.select(base, key), OmegaConf.select(cfg, key)
        if not _fits(old, new):
            raise ConfigError(f"{key}={_show(new)}: expected {_kind(old)} (the config has {_show(old)})")
