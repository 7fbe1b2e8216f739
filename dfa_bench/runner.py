"""The training loop shared by every task and method: one run, from config to summary.json."""
from __future__ import annotations

import logging
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from dfa_bench import files
from dfa_bench.errors import ConfigError, RunDirError
from dfa_bench.methods import Method, build_method
from dfa_bench.runlog import RunLog
from dfa_bench.tasks import build_task, task_class

log = logging.getLogger("dfa_bench")


class Diverged(Exception):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r} is not a device name ({err})") from None


def training_step(method: Method, optimizer: torch.optim.Optimizer, compute_loss: Callable[[], torch.Tensor],
                  measure: bool, grad_clip: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward, the method's backward, optimizer step. With `measure`, also the alignment angles."""
    optimizer.zero_grad(set_to_none=True)
    if measure:
        loss, angles = method.measured_step(compute_loss)
    else:
        loss, angles = compute_loss(), {}
        method.backward(loss)
    if grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss.detach(), angles


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Train one run described by `cfg`, writing its files to `out_dir`; returns the summary."""
    out_dir = Path(out_dir)
    old = out_dir / "summary.json"
    if old.exists():
        raise RunDirError(
            f"{out_dir} already holds a run ({old.name} exists); it is kept as it is. "
            "Choose another directory (hydra.run.dir=...) to start a new run."
        )
    started = time.time()
    identity = {
        "task": cfg.task.name, "dataset": cfg.dataset.name, "model": cfg.model.name,
        "method": cfg.method.name, "seed": int(cfg.seed),
    }
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    seed_everything(int(cfg.seed))
    device = resolve_device(str(cfg.device))
    if device.type == "cuda":  # TF32 matmuls unless the task asks for strict float32
        tf32 = cfg.task.get("precision", "tf32") != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    task_class(cfg.task.name)  # an unknown task stops here, before anything is written

    runlog = RunLog(out_dir, cfg)
    summary: dict[str, Any] = {**identity, "status": "failed", "metrics": {}}
    try:
        task = build_task(cfg, device)
        if getattr(task, "variant", None):
            summary["variant"] = task.variant
        model = task.build_model().to(device)
        method = build_method(cfg.method, int(cfg.seed)).attach(model)
        optimizer = task.optimizer(model)
        summary.update(_train(cfg, task, model, method, optimizer, runlog))
        if hasattr(task, "final_evaluation"):
            final = task.final_evaluation(model, out_dir)
            summary["metrics"].update(final)
            runlog.log(final, step=summary["steps"], epoch=summary["epochs"])
        summary["status"] = "completed"
        if hasattr(task, "save_artifacts"):
            task.save_artifacts(out_dir)
        files.torch_save(out_dir / "checkpoint.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "method": method.state_dict(),
            "epoch": summary["epochs"], "step": summary["steps"],
        })
    except Diverged as err:
        summary["status"] = "diverged"
        summary["error"] = str(err)
        log.error("run diverged: %s", err)
    except BaseException as err:
        summary["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        summary.update(
            wall_s=round(time.time() - started, 3), device=str(device), torch=torch.__version__,
            machine=platform.node(), finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        runlog.summary(summary)
        runlog.close()
    return summary


def _train(cfg: DictConfig, task, model, method: Method, optimizer, runlog: RunLog) -> dict[str, Any]:
    epochs, patience = int(task.epochs), task.patience
    selection = str(cfg.task.selection)
    maximize = getattr(task, "selection_mode", "max") == "max"
    step_scheduler = getattr(task, "step_scheduler", None)
    epoch_scheduler = getattr(task, "epoch_scheduler", None)
    every = int(cfg.alignment.every) if method.measures_alignment else 0
    interactive = bool(cfg.progress) and sys.stderr.isatty()
    report_every = max(1, epochs // 10)
    step, best, best_epoch, last_eval, angles_last = 0, None, 0, {}, {}
    train_s = 0.0
    bar = tqdm(range(1, epochs + 1), desc=f"{cfg.model.name}/{cfg.method.name}", disable=not interactive,
               leave=False, dynamic_ncols=True)
    model.train()
    for epoch in bar:
        t0 = time.perf_counter()
        total, batches = torch.zeros((), device=next(model.parameters()).device), 0
        for batch in task.train_batches():
            measure = every > 0 and step % every == 0
            loss, angles = training_step(method, optimizer, lambda: task.loss(model, batch), measure, task.grad_clip)
            if step_scheduler is not None:
                step_scheduler.step()
            total += loss
            batches += 1
            step += 1
            if angles:
                runlog.log(angles, step=step, epoch=epoch)
                angles_last = angles
        train_loss = (total / max(batches, 1)).item()
        train_s += time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} at epoch {epoch} (step {step})")
        evaluation = task.evaluate(model)
        runlog.log({"train_loss": train_loss, **evaluation}, step=step, epoch=epoch)
        score = evaluation[selection]
        if best is None or (score > best[selection] if maximize else score < best[selection]):
            best, best_epoch = evaluation, epoch
        if epoch_scheduler is not None:
            epoch_scheduler.step(score)
        last_eval, epochs_run = evaluation, epoch
        bar.set_postfix(loss=f"{train_loss:.4f}", **{selection: f"{evaluation[selection]:.4f}"})
        if not interactive and (epoch % report_every == 0 or epoch == epochs):
            log.info("epoch %d/%d  train_loss %.4f  %s %.4f", epoch, epochs, train_loss, selection,
                     evaluation[selection])
        if patience and epoch - best_epoch >= patience:
            log.info("early stop at epoch %d: no better %s for %d epochs (best epoch %d)", epoch, selection,
                     patience, best_epoch)
            break
    metrics = {**best, "best_epoch": best_epoch, "train_loss": train_loss,
               **{f"last_{k}": v for k, v in last_eval.items()}}
    return {"metrics": metrics, "alignment": angles_last, "epochs": epochs_run, "steps": step,
            "train_s": round(train_s, 3), "steps_per_s": round(step / train_s, 3) if train_s else None}
