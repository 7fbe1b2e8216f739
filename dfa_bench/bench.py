"""`dfa-bench-bench`: time BP, DFA and shallow training steps in one process, and write the figures.

    dfa-bench-bench                                   # every benchmark case, results/bench/<date>-<host>.md
    dfa-bench-bench --case cora-gcn --steps 200 --warmup 20
    dfa-bench-bench --case cora-gat -- device=cuda    # Hydra overrides after --

The methods' steps alternate (bp, dfa, shallow, bp, ...) after a warm-up, so that they share the
machine's state; each step is timed with CUDA events on a GPU, perf_counter on the CPU. Reported: median
ms per step, the DFA/BP and shallow/BP ratios of medians, steps per second and peak GPU memory. Each
method uses its own tuned settings (as a user's run would); alignment measurement is off.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from dfa_bench import files
from dfa_bench.cli import CONF_DIR
from dfa_bench.methods import build_method
from dfa_bench.runner import resolve_device, seed_everything, training_step
from dfa_bench.tasks import task_class

METHODS = ("bp", "dfa", "shallow")
CASES = {  # name -> Hydra overrides
    "cora-gcn": ["task=gcn", "dataset=cora", "model=gcn"],
    "cora-cheb": ["task=gcn", "dataset=cora", "model=cheb"],
    "cora-gat": ["task=gcn", "dataset=cora", "model=gat"],
}


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def bench_case(name: str, overrides: list[str], steps: int, warmup: int) -> list[dict]:
    cfg0 = _compose([*overrides, "method=bp"])
    device = resolve_device(str(cfg0.device))
    runs = {}
    for method_name in METHODS:
        cfg = _compose([*overrides, f"method={method_name}", "alignment.every=0"])
        seed_everything(int(cfg.seed))
        task = task_class(cfg.task.name)(cfg, device)
        model = task.build_model().to(device)
        method = build_method(cfg.method, int(cfg.seed)).attach(model)
        optimizer = task.optimizer(model)
        batches = list(task.train_batches())
        runs[method_name] = (task, model, method, optimizer, batches)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    peak: dict[str, int] = {m: 0 for m in METHODS}
    for i in range(warmup + steps):
        for method_name, (task, model, method, optimizer, batches) in runs.items():
            batch = batches[i % len(batches)]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                training_step(method, optimizer, lambda: task.loss(model, batch), measure=False)
                end.record()
                torch.cuda.synchronize(device)
                elapsed = start.elapsed_time(end)
                peak[method_name] = max(peak[method_name], torch.cuda.max_memory_allocated(device))
            else:
                t0 = time.perf_counter()
                training_step(method, optimizer, lambda: task.loss(model, batch), measure=False)
                elapsed = (time.perf_counter() - t0) * 1000
            if i >= warmup:
                times[method_name].append(elapsed)
    bp = statistics.median(times["bp"])
    rows = []
    for method_name in METHODS:
        ms = statistics.median(times[method_name])
        rows.append({
            "case": name, "method": method_name, "device": str(device), "median ms/step": round(ms, 3),
            "vs BP": round(ms / bp, 3), "steps/s": round(1000 / ms, 1),
            "peak GPU MiB": round(peak[method_name] / 2**20, 1) if device.type == "cuda" else None,
            "steps timed": steps,
        })
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()}: {os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dfa-bench-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: all cases")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every case (after --)")
    args = parser.parse_args(argv)
    rows = []
    for name in args.case or sorted(CASES):
        print(f"timing {name} ...", file=sys.stderr)
        rows += bench_case(name, [*CASES[name], *args.overrides], args.steps, args.warmup)
    table = pd.DataFrame(rows)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    text = (f"# dfa-bench-bench\n\nMachine: {machine()}\n\nDate: {stamp}\n\n"
            f"Command: `dfa-bench-bench {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
            + table.to_markdown(index=False) + "\n")
    print(text)
    name = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{platform.node()}"
    files.write_text(args.out / f"{name}.md", text)
    files.write_text(args.out / f"{name}.csv", table.to_csv(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
