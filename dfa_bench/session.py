"""What a process sets up before it trains or times anything: device, threads, determinism, seeds and
matmul precision. One place, used by the runner and the benchmark alike, so that a benchmark row labelled
"tf32" ran with TF32 enabled, as a run would.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from omegaconf import DictConfig

from dfa_bench.errors import ConfigError

# A task without its own `precision` key runs its GPU matmuls in TF32, as PyTorch's cuDNN does by default.
DEFAULT_PRECISION = "tf32"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r} is not a device name ({err})") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def precision(cfg: DictConfig, device: torch.device) -> str:
    """The precision of the run's matmuls: "fp32", "tf32" or "bf16" (autocast). On a GPU, the task's
    `precision` ("auto" is bf16); on the CPU, "bf16" only when asked for by name (CPU autocast, so that the
    bf16 code runs without a GPU), else fp32. `deterministic` runs fp32."""
    asked = str(cfg.task.get("precision") or DEFAULT_PRECISION)
    if cfg.get("deterministic"):
        return "fp32"
    if device.type != "cuda":
        return "bf16" if asked == "bf16" else "fp32"
    return "bf16" if asked == "auto" else asked


def setup(cfg: DictConfig, device: torch.device, world=None) -> torch.device:
    """Threads, deterministic algorithms, seeds and TF32 for `cfg`; returns the device to use (under
    torchrun, `cuda` becomes this process's `cuda:<local rank>`)."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    if cfg.get("deterministic"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    seed_everything(int(cfg.seed))
    if device.type == "cuda":
        if world is not None and world.size > 1 and device.index is None:
            device = torch.device("cuda", world.local_rank)
        tf32 = precision(cfg, device) != "fp32"  # bf16 autocast leaves fp32 matmuls in TF32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    return device
