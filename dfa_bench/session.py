"""What a process sets up before it trains or times anything: device, threads, determinism, seeds and
matmul precision. One place, used by the runner and the benchmark alike, so that a benchmark row labelled
"tf32" ran with TF32 enabled, as a run would.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys

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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_kept_freed_memory: bool | None = None


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of returning it to the system (glibc only).

    glibc serves every allocation above 32 MiB with its own mmap and unmaps it when freed, so a CPU
    training step, whose activations are that size, takes fresh pages from the kernel for every saved
    activation at every step and pays a page fault per 4 KiB page on first touch. On the paper-size NeRF
    (8 x 256, 1024 rays x 192 samples, 2 threads) that was 40% of a BP step and more of a DFA step
    (README, "Speed"). With mmap off and the heap never trimmed, freed activations are reused from the heap
    at the next step; the process keeps its peak memory until it exits. What is computed does not change.
    (Trimming is off altogether, not just raised: a paper-size step frees more than the largest threshold
    mallopt accepts, 2 GiB, and the heap's top was then returned and faulted in again at every step.)
    `DFA_BENCH_MALLOC=system` keeps glibc's defaults. Returns whether the setting is in effect.
    """
    global _kept_freed_memory
    if _kept_freed_memory is None:
        _kept_freed_memory = False
        if sys.platform.startswith("linux") and os.environ.get("DFA_BENCH_MALLOC", "") != "system":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _kept_freed_memory = bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, -1)
                                      and mallopt(_M_TOP_PAD, 64 * 2**20))
    return _kept_freed_memory


def setup(cfg: DictConfig, device: torch.device, world=None) -> torch.device:
    """Threads, deterministic algorithms, seeds and TF32 for `cfg`, and on the CPU the allocator setting
    of `keep_freed_memory`; returns the device to use (under torchrun, `cuda` becomes this process's
    `cuda:<local rank>`)."""
    if device.type == "cpu":
        keep_freed_memory()
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
