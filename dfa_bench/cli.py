"""`dfa-bench`: the Hydra entry point. `dfa-bench task=gcn method=dfa`; sweeps with `-m`."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dfa_bench.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
log = logging.getLogger("dfa_bench")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun and cfg.threads is None:
        cfg.threads = 1  # parallel sweep jobs share the machine's cores
    os.environ.setdefault("WANDB_SILENT", "true")
    from dfa_bench.runner import run

    try:
        if cfg.mode == "sample":
            from dfa_bench.tasks import task_class

            task = task_class(cfg.task.name)
            if not hasattr(task, "sample"):
                raise UserError(f"task={cfg.task.name} has no sample mode")
            task.sample(cfg)
            return
        if cfg.mode != "train":
            raise UserError(f"mode={cfg.mode!r}: choose train or sample")
        summary = run(cfg, Path(hc.runtime.output_dir))
    except UserError as err:
        log.error("%s", err)
        if multirun:
            return  # the other runs of the sweep go on; this one is marked failed in its summary.json
        sys.exit(2)
    m = summary["metrics"]
    shown = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and not k.startswith("last_"))
    log.info("%s  %s  (%s, %.1f s) -> %s", summary["status"], shown, summary["device"], summary["wall_s"],
             hc.runtime.output_dir)
    if summary["status"] != "completed" and not multirun:
        sys.exit(1)


def main() -> None:
    if not CONF_DIR.is_dir():
        sys.exit(f"dfa-bench: config folder {CONF_DIR} not found; install the project with `pip install -e .`")
    _main()


if __name__ == "__main__":
    main()
