"""What makes two runs the same experiment, and which code and machine produced a run.

- `comparable(config)`: the resolved config without the keys that may differ between runs of one
  experiment (the seed) or between an interrupted run and its resumption (where files are, threads,
  the logger, the progress bar, ...: `RUN_LOCAL`). Two runs with equal comparable configs and different
  seeds are seeds of one table cell.
- `config_id(config)`: a stable 12-hex-digit hash of `comparable(config)` (sorted keys, JSON), written to
  every run's summary.json as `config_id`. Tables group runs by it: runs of different configs never share
  a cell.
- `differing_keys(a, b)`: the flattened keys ("model.settings.dfa.lr") whose values differ: what names
  two configs that would otherwise land in one cell.
- `provenance()`: the package version, the git commit of the checkout the package runs from and whether
  its tracked files outside the run folders (results/, outputs/) were modified (`dirty`), and the hardware (machine name, processor, cores, torch,
  CUDA device). The commit is null when the package does not run from a git checkout.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dfa_bench import __version__

# Keys that do not change what a run computes: where files are, how it reports, how it is scheduled, which
# extra artefacts it draws (task.tsne: a t-SNE figure of the trained hidden layer).
RUN_LOCAL = ("resume", "progress", "threads", "logger", "device", "data_root", "cache_root", "checkpoint",
             "checkpoint_every", "mode", "task.tsne")
# Also left out of the identity (but compared on resumption): the seed, which makes a run one sample of
# its experiment.
NOT_IDENTITY = (*RUN_LOCAL, "seed")


def _container(config: DictConfig | Mapping) -> dict:
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"model.settings.dfa.lr": 0.01, ...}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def comparable(config: DictConfig | Mapping, drop: tuple[str, ...] = NOT_IDENTITY) -> dict:
    """The config without the keys in `drop` (top-level names, or dotted paths such as "task.tsne")."""
    def prune(d: Mapping, prefix: str) -> dict:
        return {k: prune(v, f"{prefix}{k}.") if isinstance(v, Mapping) else v
                for k, v in d.items() if f"{prefix}{k}" not in drop}

    return prune(_container(config), "")


def config_id(config: DictConfig | Mapping) -> str:
    text = json.dumps(comparable(config), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def differing_keys(a: DictConfig | Mapping, b: DictConfig | Mapping,
                   drop: tuple[str, ...] = NOT_IDENTITY) -> list[str]:
    fa, fb = flatten(comparable(a, drop)), flatten(comparable(b, drop))
    missing = object()
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, missing) != fb.get(k, missing))


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """{"version", "commit", "dirty"}: dirty = tracked files differ from the commit (untracked ignored)."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        # run folders (results/, outputs/) are left out: a sweep rewrites its own tracked result files
        status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!outputs")
        dirty = bool(status) if status is not None else None
    return {"version": __version__, "commit": commit, "dirty": dirty}


def hardware(device: torch.device | None = None) -> dict[str, Any]:
    info = {"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def provenance(device: torch.device | None = None) -> dict[str, Any]:
    return {**code_version(), "hardware": hardware(device)}
