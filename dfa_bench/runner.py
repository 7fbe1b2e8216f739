"""The training loop shared by every task and method: one run, from config to summary.json.

A run directory is in one of three states when a run starts in it:
- new: the run trains from scratch;
- interrupted (a checkpoint.pt and no summary.json, or a summary with status `failed`): with
  `resume=true` (the default) the run continues from the checkpoint: model, optimizer, schedulers, DFA
  feedback matrices, random-number states and the loop's counters, so it ends as an uninterrupted run
  would; its config must match the one saved there;
- finished (summary status `completed` or `diverged`): it is not trained again.
With `resume=false` an existing run's files are moved to <dir>/replaced-<time>/ and training starts over.
Checkpoints are written every `checkpoint_every` epochs (0: only at the end) and at the end, atomically.
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dfa_bench import files, identity, schema, session
from dfa_bench.distributed import World
from dfa_bench.errors import ConfigError, DataError, RunDirError
from dfa_bench.methods import Method, build_method
from dfa_bench.runlog import RunLog
from dfa_bench.tasks import build_task

log = logging.getLogger("dfa_bench")
FINISHED = ("completed", "diverged")


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class Progress:
    """The training loop's counters, saved in every checkpoint."""

    epoch: int = 0
    step: int = 0
    best: dict | None = None
    best_epoch: int = 0
    last_eval: dict = field(default_factory=dict)
    alignment: dict = field(default_factory=dict)
    train_loss: float = math.nan
    train_s: float = 0.0
    stopped_early: bool = False


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_step(method: Method, optimizer: torch.optim.Optimizer, compute_loss: Callable[[], torch.Tensor],
                  measure: bool, grad_clip: float | None = None,
                  world: World | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward, the method's backward, optimizer step. With `measure`, also the alignment angles."""
    optimizer.zero_grad(set_to_none=True)
    if measure:
        loss, angles = method.measured_step(compute_loss)
    else:
        loss, angles = compute_loss(), {}
        method.backward(loss)
    averaging = world is not None and world.size > 1
    if averaging or grad_clip:  # the common step needs neither: no parameter list is built for it
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if averaging:
            world.average_gradients(params)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss.detach(), angles


def _previous(out_dir: Path) -> tuple[str, dict | None]:
    """('new' | 'interrupted' | 'finished', the old summary)."""
    summary_path = out_dir / "summary.json"
    summary = None
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, json.JSONDecodeError):
            summary = {"status": "unreadable"}
        if summary.get("status") in FINISHED:
            return "finished", summary
    if (out_dir / "checkpoint.pt").exists():
        return "interrupted", summary
    return ("interrupted", summary) if summary else ("new", None)


def _archive(out_dir: Path) -> Path:
    """Move a run's files out of the way (into <dir>/replaced-<time>/) before starting over."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    target, n = out_dir / f"replaced-{stamp}", 1
    while target.exists():
        n += 1
        target = out_dir / f"replaced-{stamp}-{n}"
    target.mkdir()
    for path in list(out_dir.iterdir()):
        if path.name.startswith("replaced-") or path.name == ".hydra" or path.suffix == ".log":
            continue
        shutil.move(str(path), target / path.name)
    return target


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or corrupt file
        raise DataError(f"{path} is unreadable ({type(err).__name__}: {err}); start over with resume=false "
                        "(the file is kept in replaced-<time>/)") from None


def _build(cfg: DictConfig, device: torch.device, world: World):
    """The task, model, method and optimizer of `cfg`: everything that can fail on a config or data error,
    built before the run writes anything."""
    task = build_task(cfg, device)
    if world.size > 1:
        if not hasattr(task, "shard"):
            raise ConfigError(f"task={cfg.task.name} does not support several processes")
        task.shard(world.rank, world.size)
    model = task.build_model().to(device)
    method = build_method(cfg.method, int(cfg.seed)).attach(model)
    return task, model, method, task.optimizer(model)


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Train (or resume) the run described by `cfg` in `out_dir`; returns its summary.

    A config or data error (`UserError`) raised before training starts leaves `out_dir` as it was: the
    run's files are written only once its task, data, model and method are built. Ctrl-C during training
    writes the summary with status `interrupted` (the last checkpoint resumes the run) and re-raises.
    """
    out_dir = Path(out_dir)
    schema.validate(cfg)
    device = session.resolve_device(str(cfg.device))
    world = World.from_env(device.type)
    state, old_summary = _previous(out_dir)
    if state != "new" and cfg.resume and (out_dir / "config.yaml").exists():
        differs = identity.differing_keys(OmegaConf.load(out_dir / "config.yaml"), cfg, drop=identity.RUN_LOCAL)
        if differs:
            raise RunDirError(f"{out_dir} holds a run with another config ({', '.join(differs[:8])} differ): "
                              "run it with its own config, start over with resume=false (the old files are "
                              "kept), or choose another hydra.run.dir")
    if state == "finished" and cfg.resume:
        log.info("%s already holds a finished run (status %s): not trained again; resume=false starts over",
                 out_dir, old_summary.get("status"))
        return old_summary
    start_over = state != "new" and (not cfg.resume or not (out_dir / "checkpoint.pt").exists())
    checkpoint = None if state == "new" or start_over else _load_checkpoint(out_dir / "checkpoint.pt")

    started = time.time()
    device = session.setup(cfg, device, world)
    task, model, method, optimizer = _build(cfg, device, world)
    if start_over:
        if world.is_main:
            log.info("starting over: the earlier run's files were moved to %s", _archive(out_dir))
        world.barrier()
    resume_epoch = checkpoint["progress"]["epoch"] if checkpoint else None
    runlog = RunLog(out_dir, cfg, keep_until_epoch=resume_epoch, enabled=world.is_main)
    summary: dict[str, Any] = {
        "task": cfg.task.name, "dataset": cfg.dataset.name, "model": cfg.model.name, "method": cfg.method.name,
        "seed": int(cfg.seed), "config_id": identity.config_id(cfg), "status": "failed", "metrics": {},
        **identity.provenance(device),
    }
    if world.size > 1:
        summary["processes"] = world.size
    if getattr(task, "variant", None):
        summary["variant"] = task.variant
    if getattr(method, "variant", None):  # e.g. the random-feedback control's kind: its own table column
        summary["method_variant"] = method.variant
    progress = Progress()
    saved_epoch = resume_epoch
    try:
        if checkpoint is not None:
            _restore(checkpoint, task, model, method, optimizer, progress)
            log.info("resuming %s from epoch %d (step %d)", out_dir, progress.epoch, progress.step)
            summary["resumed_from_epoch"] = progress.epoch

        def save() -> None:
            nonlocal saved_epoch
            if world.is_main:
                files.torch_save(out_dir / "checkpoint.pt", _checkpoint(cfg, task, model, method, optimizer, progress))
            saved_epoch = progress.epoch

        _train(cfg, task, model, method, optimizer, runlog, progress, world, save)
        _finish(cfg, task, model, progress, runlog, summary, out_dir, world)
        summary["status"] = "completed"
    except Diverged as err:
        summary["status"] = "diverged"
        summary["error"] = str(err)
        log.error("run diverged: %s", err)
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        summary["checkpoint_epoch"] = saved_epoch
        raise
    except BaseException as err:
        summary["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        summary.update(wall_s=round(time.time() - started, 3), device=str(device),
                       finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        runlog.summary(summary)
        runlog.close()
    return summary


def _finish(cfg, task, model, progress: Progress, runlog: RunLog, summary: dict, out_dir: Path,
            world: World) -> None:
    """The summary's metrics, the task's final evaluation and artefacts, the alignment plot."""
    metrics = {**(progress.best or {}), "best_epoch": progress.best_epoch, "train_loss": progress.train_loss,
               **{f"last_{k}": v for k, v in progress.last_eval.items()}}
    summary.update(metrics=metrics, alignment=progress.alignment, epochs=progress.epoch, steps=progress.step,
                   train_s=round(progress.train_s, 3),
                   steps_per_s=round(progress.step / progress.train_s, 3) if progress.train_s else None)
    if not world.is_main:
        return
    if hasattr(task, "final_evaluation"):
        final = task.final_evaluation(model, out_dir)
        summary["metrics"].update(final)
        runlog.log(final, step=progress.step, epoch=progress.epoch)
    if hasattr(task, "save_artifacts"):
        task.save_artifacts(out_dir)
    if progress.alignment:
        from dfa_bench.plots import plot_alignment

        plot_alignment(out_dir / "metrics.jsonl", out_dir / "alignment.png",
                       f"{cfg.task.name} {cfg.dataset.name} {cfg.model.name} {cfg.method.name} seed {cfg.seed}")


def _checkpoint(cfg, task, model, method, optimizer, progress: Progress) -> dict[str, Any]:
    ckpt = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "method": method.state_dict(),
        "progress": asdict(progress), "rng": rng_state(), "config": OmegaConf.to_container(cfg, resolve=True),
    }
    for name in ("step_scheduler", "epoch_scheduler"):
        scheduler = getattr(task, name, None)
        if scheduler is not None:
            ckpt[name] = scheduler.state_dict()
    if hasattr(task, "state_dict"):
        ckpt["task"] = task.state_dict()
    return ckpt


def _restore(ckpt, task, model, method, optimizer, progress: Progress) -> None:
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    method.load_state_dict(ckpt["method"])
    for name in ("step_scheduler", "epoch_scheduler"):
        if name in ckpt and getattr(task, name, None) is not None:
            getattr(task, name).load_state_dict(ckpt[name])
    if "task" in ckpt and hasattr(task, "load_state_dict"):
        task.load_state_dict(ckpt["task"])
    for key, value in ckpt["progress"].items():
        setattr(progress, key, value)
    set_rng_state(ckpt["rng"])


def _train(cfg: DictConfig, task, model, method: Method, optimizer, runlog: RunLog, progress: Progress,
           world: World, save: Callable[[], None]) -> None:
    epochs, patience = int(task.epochs), task.patience
    selection = str(cfg.task.selection)
    maximize = getattr(task, "selection_mode", "max") == "max"
    step_scheduler = getattr(task, "step_scheduler", None)
    epoch_scheduler = getattr(task, "epoch_scheduler", None)
    every = int(cfg.alignment.every) if method.measures_alignment else 0
    checkpoint_every = int(cfg.checkpoint_every)
    interactive = bool(cfg.progress) and sys.stderr.isatty() and world.is_main
    report_every = max(1, epochs // 10)
    device = next(model.parameters()).device
    name = f"{cfg.dataset.name}-{cfg.model.name}-{cfg.method.name}-seed{cfg.seed}"  # names the run's progress lines
    bar = tqdm(range(progress.epoch + 1, epochs + 1), desc=name,
               disable=not interactive, leave=False, dynamic_ncols=True, initial=progress.epoch, total=epochs)
    model.train()
    for epoch in bar:
        if progress.stopped_early:
            break
        t0 = time.perf_counter()
        total, batches = torch.zeros((), device=device), 0
        for batch in task.train_batches():
            measure = every > 0 and progress.step % every == 0
            loss, angles = training_step(method, optimizer, lambda: task.loss(model, batch), measure,
                                         task.grad_clip, world)
            if step_scheduler is not None:
                step_scheduler.step()
            total += loss
            batches += 1
            progress.step += 1
            if angles:
                runlog.log(angles, step=progress.step, epoch=epoch)
                progress.alignment = angles
            if progress.step % 100 == 0 and not torch.isfinite(total):
                raise Diverged(f"training loss is {total.item()} in epoch {epoch} (step {progress.step})")
        train_loss = (total / max(batches, 1)).item()
        progress.train_s += time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} at epoch {epoch} (step {progress.step})")
        evaluation = task.evaluate(model)
        runlog.log({"train_loss": train_loss, **evaluation}, step=progress.step, epoch=epoch)
        score = evaluation[selection]
        if progress.best is None or (score > progress.best[selection] if maximize else score < progress.best[selection]):
            progress.best, progress.best_epoch = evaluation, epoch
        if epoch_scheduler is not None:
            epoch_scheduler.step(score)
        progress.epoch, progress.last_eval, progress.train_loss = epoch, evaluation, train_loss
        bar.set_postfix(loss=f"{train_loss:.4f}", **{selection: f"{score:.4f}"})
        if not interactive and world.is_main and (epoch % report_every == 0 or epoch == epochs):
            log.info("%s  epoch %d/%d  train_loss %.4f  %s %.4f", name, epoch, epochs, train_loss, selection, score)
        if patience and epoch - progress.best_epoch >= patience:
            log.info("%s  early stop at epoch %d: no better %s for %d epochs (best epoch %d)", name, epoch, selection,
                     patience, progress.best_epoch)
            progress.stopped_early = True
        if checkpoint_every and (epoch % checkpoint_every == 0 or epoch == epochs or progress.stopped_early):
            save()
    if not checkpoint_every:
        save()
