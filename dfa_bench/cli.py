"""`dfa-bench`: the Hydra entry point. `dfa-bench task=gcn method=dfa`; sweeps with `-m`.

Exit codes: 0 the run completed (or was already finished); 1 it crashed in training (the traceback is in
the run's log), diverged, or, for a sweep, any of its runs did not complete; 2 a config, data or
run-directory error (one line, and no run folder is left behind for a run that never started training);
130 interrupted by Ctrl-C (the line printed says how to resume).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from dfa_bench.errors import ConfigError, UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = frozenset(p.name for p in CONF_DIR.iterdir() if p.is_dir()) if CONF_DIR.is_dir() else frozenset()
OUTCOMES = ".outcomes.jsonl"  # in a sweep folder while the sweep runs: one line per finished job
log = logging.getLogger("dfa_bench")
_sweep_failures: list[dict] = []
_job_started = False  # set when Hydra hands a composed config to `_main`


def _value_overrides(overrides: list[str]) -> tuple[list[str], list[tuple[str, bool]]]:
    """(config-group choices, [(key, added with +)] for value overrides); hydra.* overrides are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups, values = [], []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        key = parsed.key_or_group
        if key.startswith("hydra"):
            continue
        if key.split("/")[0] in GROUPS and "." not in key:
            groups.append(text)
        elif not parsed.is_delete():
            values.append((key, parsed.is_add() or parsed.is_force_add()))
    return groups, values


def _check_overrides(cfg: DictConfig, overrides: list[str]) -> None:
    from dfa_bench import schema

    groups, values = _value_overrides(overrides)
    if values:
        base = hydra.compose(config_name="config", overrides=groups)
        schema.check_overrides(cfg, base, values)


def _is_fresh(out_dir: Path) -> bool:
    """Holds nothing but what Hydra writes when a job starts (.hydra/ and the job's log)."""
    return all(p.name == ".hydra" or p.suffix == ".log" for p in out_dir.iterdir()) if out_dir.is_dir() else True


def _remove_fresh(out_dir: Path) -> None:
    """Remove a run folder in which no run started, and the folders above it that it leaves empty."""
    if (out_dir / "checkpoint.pt").exists():
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    parent = out_dir.resolve().parent
    while parent != cwd and cwd in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


def _resume_command(out_dir: Path) -> str:
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.run.dir=")]
    return shlex.join(["dfa-bench", *overrides, f"hydra.run.dir={out_dir}"])


def _record(hc, status: str, out_dir: Path, message: str = "") -> None:
    """In a sweep, append this job's outcome for the end-of-sweep report."""
    line = json.dumps({"job": hc.job.num, "status": status, "dir": str(out_dir), "message": message})
    with open(Path(hc.sweep.dir) / OUTCOMES, "a") as f:
        f.write(line + "\n")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> None:
    global _job_started
    _job_started = True
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    out_dir = Path(hc.runtime.output_dir)
    fresh = _is_fresh(out_dir)
    main_process = int(os.environ.get("RANK", "0")) == 0
    if multirun and cfg.threads is None:
        cfg.threads = 1  # parallel sweep jobs share the machine's cores
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        _check_overrides(cfg, list(hc.overrides.task))
        if cfg.mode in ("sample", "eval"):
            _use_checkpoint(cfg)
            if _is_fresh(out_dir):
                _remove_fresh(out_dir)  # the mode wrote nothing there (e.g. NeRF eval writes beside its checkpoint)
            return
        from dfa_bench.runner import run

        summary = run(cfg, out_dir)
    except UserError as err:
        if fresh:
            _remove_fresh(out_dir)
        log.error("%s", err)
        if multirun:
            _record(hc, "failed", out_dir, str(err))
            return  # the other runs of the sweep go on
        sys.exit(2)
    except KeyboardInterrupt:
        if fresh and not (out_dir / "config.yaml").exists():
            _remove_fresh(out_dir)
            print("dfa-bench: interrupted before training started; nothing was written", file=sys.stderr)
        elif (out_dir / "checkpoint.pt").exists():
            print(f"dfa-bench: interrupted; resume from its last checkpoint with: {_resume_command(out_dir)}",
                  file=sys.stderr)
        else:
            print(f"dfa-bench: interrupted before the first checkpoint; {out_dir} holds no state to resume from",
                  file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        log.exception("run crashed: %s: %s", type(err).__name__, err)  # the traceback goes to the run's log
        if multirun:
            _record(hc, "failed", out_dir, f"{type(err).__name__}: {err}")
            return
        sys.exit(1)
    if multirun:
        _record(hc, summary["status"], out_dir, summary.get("error", ""))
    if main_process:
        m = summary["metrics"]
        shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and not k.startswith("last_"))
        log.info("%s  %s  (%s, %.1f s) -> %s", summary["status"], shown, summary["device"], summary["wall_s"], out_dir)
    if summary["status"] != "completed" and not multirun:
        sys.exit(1)


def _use_checkpoint(cfg: DictConfig) -> None:
    """`mode=sample` / `mode=eval`: the task's use of a finished run's checkpoint (no training)."""
    from dfa_bench.tasks import task_class

    task = task_class(cfg.task.name)
    entry = {"sample": "sample", "eval": "evaluate_checkpoint"}[cfg.mode]
    if not hasattr(task, entry):
        raise ConfigError(f"task={cfg.task.name} has no mode={cfg.mode}")
    getattr(task, entry)(cfg)


class SweepReport(Callback):
    """At the end of a sweep: one line per run (completed / failed / diverged, with its folder)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        (Path(config.hydra.sweep.dir) / OUTCOMES).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        path = Path(config.hydra.sweep.dir) / OUTCOMES
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        path.unlink(missing_ok=True)
        rows.sort(key=lambda r: r["job"])
        for r in rows:
            detail = f": {r['message']}" if r["message"] and r["status"] != "completed" else ""
            print(f"dfa-bench sweep: {r['status']:<11} {r['dir']}{detail}", file=sys.stderr)
        _sweep_failures.extend(r for r in rows if r["status"] != "completed")
        done = len(rows) - len(_sweep_failures)
        print(f"dfa-bench sweep: {done} of {len(rows)} runs completed", file=sys.stderr)


def _check_launcher(argv: list[str]) -> None:
    if any(a.startswith("hydra/launcher=") and "slurm" in a for a in argv) and shutil.which("sbatch") is None:
        print("dfa-bench: hydra/launcher=slurm needs a Slurm cluster (no `sbatch` on PATH); "
              "run the sweep without it (joblib, the default)", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    if not CONF_DIR.is_dir():
        sys.exit(f"dfa-bench: config folder {CONF_DIR} not found; install the project with `pip install -e .`")
    _check_launcher(sys.argv[1:])
    try:
        _main()
    except SystemExit as exit_:
        # Hydra ends its own errors (an unknown config group option, a key not in the config) with 1.
        if exit_.code == 1 and not _job_started:
            sys.exit(2)
        raise
    if _sweep_failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
