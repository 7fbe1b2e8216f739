"""Tasks: a dataset, the loss, the evaluation and the model-selection rule. Tasks never know the method.

A task class is built as `Task(cfg, device)` and provides:
  build_model() -> nn.Module             the architecture cfg.model names, with feedback points marked
  optimizer(model) -> torch.optim.Optimizer
  train_batches() -> iterable            one epoch of batches
  loss(model, batch) -> scalar tensor
  evaluate(model) -> dict[str, float]    after each epoch; cfg.task.selection names the metric to maximize
"""
from __future__ import annotations

import importlib

from dfa_bench.errors import ConfigError

TASKS = {"gcn": "dfa_bench.tasks.graph:NodeClassification"}


def task_class(name: str):
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
