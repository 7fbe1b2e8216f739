"""Data parallelism over several processes (torch.distributed, started by `torchrun`).

Every process holds the whole model; each takes its shard of every batch (the task's `shard`), computes
its gradients with the method (BP, DFA or shallow: the DFA feedback matrices are drawn from the same
seeded generator in every process, so they are identical), and the gradients are averaged across
processes before the optimizer step, so the step equals one process's step on the global batch. Only
process 0 writes files. Backend: NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> "World":
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def average_gradients(self, params) -> None:
        """All-reduce the gradients as one flat buffer and divide by the number of processes."""
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()
