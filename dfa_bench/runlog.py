"""What a run leaves behind: config.yaml, metrics.jsonl, summary.json, and optionally a wandb run.

metrics.jsonl holds one JSON object per logged point, e.g. {"epoch": 3, "step": 3, "train_loss": ...}
or {"step": 10, "align/param/conv1.lin.weight": 71.3, ...}; summary.json is written atomically at the
end (and on failure) with at least task, dataset, model, method, seed, config_id (`dfa_bench.identity`),
metrics, wall_s, status, the code's version, commit and dirty flag, and the hardware. Non-finite numbers are
written as null, so every file is valid JSON.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dfa_bench import files


class RunLog:
    """`keep_until_epoch`: a resumed run drops the rows logged after its checkpoint; `enabled=False`
    (processes other than the first of a multi-process run) writes nothing."""

    def __init__(self, out_dir: Path, cfg: DictConfig, keep_until_epoch: int | None = None,
                 enabled: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._metrics = self._wandb = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        files.write_text(self.out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        path = self.out_dir / "metrics.jsonl"
        if keep_until_epoch is not None and path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and _epoch(line) <= keep_until_epoch]
            files.write_text(path, "".join(line + "\n" for line in kept))
        elif keep_until_epoch is None and path.exists():
            path.unlink()  # a new run in a directory whose earlier files were moved away
        self._metrics = open(path, "a", buffering=1)
        self._wandb = _start_wandb(cfg, self.out_dir) if cfg.logger.name == "wandb" else None

    def log(self, metrics: dict[str, Any], **position: int) -> None:
        if not self.enabled:
            return
        row = {**position, **{k: _clean(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=position.get("step"))

    def summary(self, summary: dict[str, Any]) -> None:
        if not self.enabled:
            return
        summary = _finite(summary)
        files.write_json(self.out_dir / "summary.json", summary)
        if self._wandb is not None:
            self._wandb.summary.update({"status": summary["status"], **summary.get("metrics", {})})

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _epoch(line: str) -> int:
    try:
        return int(json.loads(line).get("epoch", 0))
    except (json.JSONDecodeError, TypeError, ValueError):
        return 1 << 30  # a torn last line is dropped


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None: summary.json stays valid JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _clean(v: Any) -> Any:
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and math.isnan(v) else v


def _start_wandb(cfg: DictConfig, out_dir: Path):
    import wandb  # imported only when selected: it costs a second and starts a service process

    lg = cfg.logger
    name = f"{cfg.task.name}-{cfg.dataset.name}-{cfg.model.name}-{cfg.method.name}-seed{cfg.seed}"
    run_id = hashlib.sha1(str(out_dir.resolve()).encode()).hexdigest()[:12]  # a resumed run continues it
    return wandb.init(
        project=lg.project, entity=lg.entity, group=lg.group, mode=lg.mode, dir=str(out_dir), name=name,
        id=run_id, resume="allow",
        config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous",
        settings=wandb.Settings(console="off", x_disable_stats=True, disable_git=True, silent=True),
    )
