"""`make gpu-check` (`python -m dfa_bench.gpu_check`): what a user with a GPU runs once, as one command.

1. Every task's smallest preset on CUDA in fp32, tf32 and bf16, one training step of every method: the
   loss must be finite (a method that cannot train a task, e.g. DRTP on a regression, is reported as such).
2. bf16 DFA updates must keep their direction: the cosine between each parameter's update under bf16
   autocast and under float32, on the same batch and weights, above `MIN_COSINE` (the LM and NeRF, the two
   tasks with a bf16 path).
3. The paper-size benchmark cases (`dfa-bench-bench --case lm-paper-macro --case nerf-paper --case
   nerf-paper-bf16`), written to results/bench/ with machine and date.
On a machine without a GPU it says so and exits 0. Exit 1 when a check fails.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from dfa_bench import session
from dfa_bench.bench import compose_config
from dfa_bench.errors import UserError

MIN_COSINE = 0.95
PRESETS = {
    "gcn": ["task=gcn"], "gae": ["task=gae"], "recsys": ["task=recsys", "dataset=criteo_sample"],
    "lm": ["experiment=lm_tiny"], "nerf": ["experiment=nerf_tiny"], "image": ["task=image"],
}
METHODS = ("bp", "dfa", "shallow", "fa", "drtp")
PAPER_CASES = ("lm-paper-macro", "nerf-paper", "nerf-paper-bf16")


def _step(cfg, device: torch.device):
    """Build the task, model and method of `cfg` from its seed; one forward and backward on the first
    batch. Returns (loss, {parameter: its update})."""
    from dfa_bench.methods import build_method
    from dfa_bench.tasks import build_task

    session.setup(cfg, device)
    task = build_task(cfg, device)
    model = task.build_model().to(device)
    method = build_method(cfg.method, int(cfg.seed)).attach(model)
    batch = next(iter(task.train_batches()))
    torch.manual_seed(int(cfg.seed))  # the same sampling noise and dropout masks in every precision
    loss = task.loss(model, batch)
    method.backward(loss)
    return loss.detach().float().item(), {n: p.grad.detach().float().flatten().clone()
                                          for n, p in model.named_parameters() if p.grad is not None}


def update_cosines(cfg_for: Callable[[str], object], device: torch.device) -> tuple[dict[str, float], float]:
    """Per parameter, the cosine between its update under bf16 autocast and under fp32 (`cfg_for(precision)`
    gives the config), and the bf16 loss."""
    _, exact = _step(cfg_for("fp32"), device)
    loss, low = _step(cfg_for("bf16"), device)
    return {n: F.cosine_similarity(exact[n], low[n], dim=0).item() for n in exact
            if n in low and exact[n].norm() > 0}, loss


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine; nothing to check")
        return 0
    device = torch.device("cuda")
    failures = []
    for task, preset in PRESETS.items():
        for precision in ("fp32", "tf32", "bf16"):
            for method in METHODS:
                cfg = compose_config([*preset, f"method={method}", "device=cuda"]
                               + ([f"task.precision={precision}"] if task in ("lm", "nerf") else []))
                try:
                    loss, _ = _step(cfg, device)
                except UserError as err:
                    print(f"gpu-check: {task} {precision} {method}: not supported ({str(err).split(';')[0]})")
                    continue
                ok = torch.isfinite(torch.tensor(loss)).item()
                print(f"gpu-check: {task} {precision} {method}: loss {loss:.4f} {'ok' if ok else 'NOT FINITE'}")
                if not ok:
                    failures.append(f"{task} {precision} {method}: loss {loss}")
    for task in ("lm", "nerf"):
        cosines, _ = update_cosines(lambda p: compose_config([*PRESETS[task], "method=dfa", "device=cuda",
                                                        f"task.precision={p}"]), device)
        worst = min(cosines, key=cosines.get)
        print(f"gpu-check: {task} bf16 DFA update vs fp32: min cosine {cosines[worst]:.4f} ({worst})")
        if cosines[worst] < MIN_COSINE:
            failures.append(f"{task}: bf16 DFA update of {worst} has cosine {cosines[worst]:.4f} with fp32")
    bench = Path(sys.executable).parent / "dfa-bench-bench"
    cases = [a for case in PAPER_CASES for a in ("--case", case)]
    if subprocess.run([str(bench), *cases, "--steps", "20", "--warmup", "5"]).returncode != 0:
        failures.append("the paper-size benchmark cases")
    for f in failures:
        print(f"gpu-check: FAILED {f}")
    print(f"gpu-check: {'all checks passed' if not failures else f'{len(failures)} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
