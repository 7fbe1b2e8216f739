"""Tasks: a dataset, the loss, the evaluation and the model-selection rule. Tasks never know the method.

A task class is built as `Task(cfg, device)` and provides:
  build_model() -> nn.Module             the architecture cfg.model names, with feedback points marked
  optimizer(model) -> torch.optim.Optimizer
  train_batches() -> iterable            one epoch of batches
  loss(model, batch) -> scalar tensor
  evaluate(model) -> dict[str, float]    after each epoch; cfg.task.selection names the metric to maximize
  epochs: int                            how many epochs to train
  patience: int | None                   stop after this many epochs without a better selection metric
  grad_clip: float | None                clip the gradient norm to this value before each step
and optionally:
  selection_mode: "max" | "min"          (default "max")
  step_scheduler, epoch_scheduler        LR schedulers stepped after every step / with the selection metric
  variant: str                           what distinguishes the run in a table row (e.g. the optimizer)
  batch_items(batch) -> (count, unit)    what one step processes (for throughput figures)
  save_artifacts(out_dir)                files a finished run keeps beside its checkpoint
  final_evaluation(model, out_dir)       metrics measured once at the end (e.g. NeRF's test renders)
  sample(cfg) (static)                   `mode=sample`: use a finished run's checkpoint
"""
from __future__ import annotations

import importlib

from dfa_bench.errors import ConfigError

TASKS = {
    "gcn": "dfa_bench.tasks.graph:NodeClassification",
    "gae": "dfa_bench.tasks.gae:LinkPrediction",
    "recsys": "dfa_bench.tasks.recsys:ClickThroughRate",
    "lm": "dfa_bench.tasks.lm:LanguageModelling",
    "nerf": "dfa_bench.tasks.nerf:ViewSynthesis",
    "image": "dfa_bench.tasks.image:ImageClassification",
}


def task_class(name: str):
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def method_settings(cfg):
    """The model's training settings for this run's method (conf/model/*.yaml, `settings`).

    A model gives settings per method name; a method without its own entry uses its `tuning` fallback
    (shallow runs with the DFA settings unless the model has a `shallow` entry, as in the paper's code).
    """
    settings = cfg.model.settings
    for key in (cfg.method.name, cfg.method.tuning):
        if key in settings:
            return settings[key]
    raise ConfigError(f"model {cfg.model.name!r} has no settings for method {cfg.method.name!r}")


def build_task(cfg, device):
    """The task of `cfg`, after checking that its dataset and model belong to it."""
    cls = task_class(cfg.task.name)
    for group in ("dataset", "model"):
        owner = cfg[group].get("task")
        owners = list(owner) if not isinstance(owner, str) and owner is not None else [owner]
        if cfg.task.name not in owners:
            raise ConfigError(
                f"{group} {cfg[group].name!r} belongs to task {' / '.join(map(str, owners))!r}, not task {cfg.task.name!r}; "
                f"pick a {group} of task {cfg.task.name!r} (see `dfa-bench --help`)"
            )
    return cls(cfg, device)
