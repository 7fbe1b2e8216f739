"""`dfa-bench-bench`: time BP, DFA and shallow training steps in one process, and write the figures.

    dfa-bench-bench                                   # the CPU-sized cases, results/bench/<date>-<host>.md
    dfa-bench-bench --case cora-gcn --steps 200 --warmup 20
    dfa-bench-bench --case cora-gat -- device=cuda    # Hydra overrides after --
    dfa-bench-bench --criteo-rows 3000000             # Criteo preprocessing throughput and peak memory
    dfa-bench-bench --case lm-tiny --methods bp,dfa,fa --profile 5   # also where the time goes
    dfa-bench-bench --case nerf-paper --case lm-paper-cpu --widths 64,128,256,512 --steps 3 --warmup 1

The methods' steps alternate (bp, dfa, shallow, bp, ...) after a warm-up, so that they share the
machine's state; each step is timed with CUDA events on a GPU, perf_counter on the CPU. Reported: median
ms per step, the DFA/BP and shallow/BP ratios of medians, steps and items (tokens, samples, rays, nodes)
per second, and peak GPU memory. Each
method uses its own tuned settings (as a user's run would); alignment measurement is off.
`--methods` picks the methods (default: the case's own, else bp, dfa, shallow; the first is the reference
of the ratios).
`--widths` times every case again at each width (the NeRF MLP's `model.width`; the LM's `model.d_model`,
with `model.d_ff` four times it) and draws the ratios against width in `<name>-width.png`.
`--profile N` also profiles N steps of each method with torch.profiler after the timing, and writes the
operators that take the most time (self time, CPU and CUDA) to `<name>-profile.md`.
"""
from __future__ import annotations

import argparse
import itertools
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
from dfa_bench.errors import UserError
from dfa_bench.methods import build_method
from dfa_bench.runner import training_step
from dfa_bench import session
from dfa_bench.session import resolve_device
from dfa_bench.tasks import build_task

METHODS = ("bp", "dfa", "shallow")
CASES = {  # name -> Hydra overrides
    "cora-gcn": ["task=gcn", "dataset=cora", "model=gcn"],
    "cora-cheb": ["task=gcn", "dataset=cora", "model=cheb"],
    "cora-gat": ["task=gcn", "dataset=cora", "model=gat"],
    "criteo-deepfm-b2048": ["task=recsys", "dataset=criteo_sample", "model=deepfm", "task.batch_size=2048"],
    "lm-tiny": ["experiment=lm_tiny"],
    "lm-small-macro": ["experiment=lm_tiny", "model.d_model=256", "model.layers=4", "model.heads=4",
                       "model.d_ff=1024", "task.context=64", "task.batch_size=16"],
    "lm-small-micro": ["experiment=lm_tiny", "model.d_model=256", "model.layers=4", "model.heads=4",
                       "model.d_ff=1024", "task.context=64", "task.batch_size=16", "dfa.placement=micro"],
    "lm-paper-macro": ["task=lm", "dataset=wikitext2"],  # 6 x 512, 32k BPE, 64 x 128 tokens: a GPU case
    "nerf-tiny": ["experiment=nerf_tiny"],
    "nerf-small": ["experiment=nerf_tiny", "model.layers=4", "model.width=128", "task.rays=512"],
    "nerf-paper": ["task=nerf", "scene=lego", "model=nerf"],  # 8 x 256, 64 + 128 samples, 1024 rays (CPU: make bench-paper-cpu)
    "nerf-paper-bf16": ["task=nerf", "scene=lego", "model=nerf", "task.precision=bf16"],
    # The paper's LM (6 x 512, 32k BPE, 128 tokens) with 8 streams a step instead of 64: its size on a CPU.
    "lm-paper-cpu": ["task=lm", "dataset=wikitext2", "task.batch_size=8"],
    # DFA-GNN's protocol on Cora (3-layer GCN, 64 hidden, 60/20/20 split): DFA-GNN against BP and DFA.
    "dfagnn-cora": ["experiment=dfagnn_cora"],
}
CASE_METHODS = {"dfagnn-cora": ("bp", "dfa", "dfa_gnn", "shallow")}  # a case's methods when --methods is not given
DEFAULT_CASES = ["cora-gcn", "cora-cheb", "cora-gat", "dfagnn-cora", "criteo-deepfm-b2048", "lm-tiny",
                 "lm-small-macro", "lm-small-micro", "nerf-tiny", "nerf-small"]
# --widths: the overrides that set a case's model width, by task
WIDTH_OVERRIDES = {
    "nerf": lambda w: [f"model.width={w}"],
    "lm": lambda w: [f"model.d_model={w}", f"model.d_ff={4 * w}"],
}


def compose_config(overrides: list[str]):
    """The run config `dfa-bench` composes from these overrides (also used by gpu_check)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def width_overrides(overrides: list[str], width: int) -> list[str]:
    """The overrides that give a case's model `width` (WIDTH_OVERRIDES); a task without a width is refused."""
    task = str(compose_config(overrides).task.name)
    if task not in WIDTH_OVERRIDES:
        raise UserError(f"--widths: the {task} task has no model width to vary (tasks with one: "
                        f"{', '.join(WIDTH_OVERRIDES)})")
    return WIDTH_OVERRIDES[task](width)


def bench_case(name: str, overrides: list[str], steps: int, warmup: int, methods=METHODS,
               profile: int = 0) -> tuple[list[dict], str]:
    cfg0 = compose_config([*overrides, f"method={methods[0]}"])
    device = resolve_device(str(cfg0.device))
    precision = session.precision(cfg0, device)  # the label of what session.setup enables below
    runs, unsupported = {}, {}
    for method_name in methods:
        cfg = compose_config([*overrides, f"method={method_name}", "alignment.every=0"])
        session.setup(cfg, device)  # threads, seeds, and TF32 as a run of this config would have them
        task = build_task(cfg, device)
        model = task.build_model().to(device)
        method = build_method(cfg.method, int(cfg.seed)).attach(model)
        optimizer = task.optimizer(model)
        batches = list(itertools.islice(task.train_batches(), warmup + steps))
        try:  # a method that cannot train this model (drtp without a classification error) is reported
            training_step(method, optimizer, lambda: task.loss(model, batches[0]), measure=False)
        except UserError as err:
            unsupported[method_name] = str(err).split(";")[0]
            continue
        runs[method_name] = (task, model, method, optimizer, batches)
    if methods[0] not in runs:
        raise UserError(f"the reference method {methods[0]} cannot run case {name}: {unsupported[methods[0]]}")
    methods = [m for m in methods if m in runs]
    times: dict[str, list[float]] = {m: [] for m in methods}
    peak: dict[str, int] = {m: 0 for m in methods}
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
    reference = methods[0]
    bp = statistics.median(times[reference])
    task, batches = runs[reference][0], runs[reference][4]
    count, unit = task.batch_items(batches[0]) if hasattr(task, "batch_items") else (None, "")
    rows = []
    for method_name in methods:
        ms = statistics.median(times[method_name])
        rows.append({
            "case": name, "method": method_name, "device": str(device), "precision": precision,
            "median ms/step": round(ms, 3), f"vs {reference}": round(ms / bp, 3), "steps/s": round(1000 / ms, 1),
            "items/s": f"{count * 1000 / ms:,.0f} {unit}" if count else "",
            "peak GPU MiB": round(peak[method_name] / 2**20, 1) if device.type == "cuda" else None,
            "steps timed": steps,
        })
    rows += [{"case": name, "method": m, "device": str(device), "precision": precision, "note": f"not run: {why}"}
             for m, why in unsupported.items()]
    return rows, (_profile(name, runs, device, profile) if profile else "")


def _profile(name: str, runs: dict, device: torch.device, steps: int) -> str:
    """The operators with the most self time over `steps` steps of each method (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    sections = []
    for method_name, (task, model, method, optimizer, batches) in runs.items():
        with profile(activities=activities) as prof:
            for i in range(steps):
                batch = batches[i % len(batches)]
                training_step(method, optimizer, lambda: task.loss(model, batch), measure=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        table = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=50)
        sections.append(f"### {name}, {method_name} ({steps} steps)\n\n```\n{table}\n```")
    return "\n\n".join(sections)


def bench_criteo_preprocessing(rows: int, work: Path) -> list[dict]:
    """Generate a Criteo-format file of `rows` lines, preprocess it in a child process: rows/s, peak RSS."""
    import resource
    import subprocess
    import tempfile

    from dfa_bench.data.ctr import generate_criteo

    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        source = Path(tmp) / "train.txt"
        t0 = time.perf_counter()
        generate_criteo(source, rows, seed=0, malformed_every=100_000)
        generated_s = time.perf_counter() - t0
        code = ("import json, sys; from pathlib import Path; from dfa_bench.data.ctr import preprocess_criteo; "
                "m = preprocess_criteo(Path(sys.argv[1]), Path(sys.argv[2]), progress=False); "
                "print(json.dumps({k: m[k] for k in ('rows', 'malformed', 'seconds')}))")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code, str(source), str(Path(tmp) / "cache")],
                             capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        meta = __import__("json").loads(out.stdout.strip().splitlines()[-1])
        return [{
            "case": "criteo-preprocess", "lines": rows, "file MiB": round(source.stat().st_size / 2**20, 1),
            "rows kept": meta["rows"], "malformed": meta["malformed"], "seconds": round(wall, 1),
            "rows/s": round(rows / wall), "peak RSS MiB": round(max(peak_kib, before) / 1024),
            "generate s": round(generated_s, 1),
        }]


def plot_width(table: pd.DataFrame, path: Path, machine_line: str, stamp: str) -> Path:
    """Step time relative to the reference method against model width, one panel per case."""
    from dfa_bench.plots import pyplot, save_figure

    table = table[table["width"].notna() & table["median ms/step"].notna()]
    ratio = next(c for c in table.columns if c.startswith("vs "))
    cases = list(dict.fromkeys(table["case"]))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cases), figsize=(5.5 * len(cases), 4.2), squeeze=False)
    for ax, case in zip(axes[0], cases):
        rows = table[table["case"] == case]
        for method in list(dict.fromkeys(rows["method"]))[1:]:
            r = rows[rows["method"] == method].sort_values("width")
            ax.plot(r["width"], r[ratio], marker="o", label=method)
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(rows["width"].unique()), [str(int(w)) for w in sorted(rows["width"].unique())])
        ax.set_ylim(0, max(1.2, float(rows[ratio].max()) * 1.1))
        ax.set_xlabel("model width")
        ax.set_ylabel(f"step time {ratio}")
        ax.set_title(case, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"{machine_line.split(':')[0]}, {stamp}", fontsize=8)
    return save_figure(fig, path)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()}: {os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
            + (", freed memory kept for reuse (session.keep_freed_memory)" if session.keep_freed_memory()
               else ", the C library's default allocator settings"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dfa-bench-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: all cases")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods to time, the first being the reference (default: the "
                             "case's own, else bp,dfa,shallow)")
    parser.add_argument("--widths", default=None, metavar="W1,W2,...",
                        help="time every case at each of these model widths and draw the ratios against width")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N steps of each method and write <name>-profile.md")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--criteo-rows", type=int, default=0,
                        help="also time Criteo preprocessing on a generated file of this many lines")
    parser.add_argument("--work", type=Path, default=Path("results/bench/tmp"),
                        help="where the generated Criteo file is written (deleted afterwards)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every case (after --)")
    args = parser.parse_args(argv)
    from dfa_bench.methods import METHODS as KNOWN

    methods = None
    if args.methods is not None:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        unknown = [m for m in methods if m not in KNOWN]
        if unknown or not methods:
            print(f"dfa-bench-bench: unknown method(s) {unknown}; choose from {', '.join(KNOWN)}", file=sys.stderr)
            return 2
    try:
        widths = [int(w) for w in args.widths.split(",")] if args.widths else [None]
    except ValueError:
        print(f"dfa-bench-bench: --widths takes whole numbers separated by commas, got {args.widths!r}",
              file=sys.stderr)
        return 2
    rows, profiles = [], []
    cases = args.case if args.case is not None else ([] if args.criteo_rows else DEFAULT_CASES)
    for name, width in itertools.product(cases, widths):
        overrides = [*CASES[name], *args.overrides]
        print(f"timing {name}{f' at width {width}' if width else ''} ...", file=sys.stderr)
        try:
            if width is not None:
                overrides += width_overrides(overrides, width)
            case_rows, profiled = bench_case(name, overrides, args.steps, args.warmup,
                                             methods or CASE_METHODS.get(name, METHODS), args.profile)
            rows += [{**r, "width": width} if width else r for r in case_rows]
            if profiled:
                profiles.append(profiled)
        except UserError as err:
            print(f"dfa-bench-bench: {name}: {err}", file=sys.stderr)
            return 2
    sections = []
    if rows:
        sections.append("## Training steps\n\n" + pd.DataFrame(rows).astype(object).fillna("").to_markdown(index=False))
    prep = []
    if args.criteo_rows:
        print(f"generating and preprocessing {args.criteo_rows} Criteo-format lines ...", file=sys.stderr)
        prep = bench_criteo_preprocessing(args.criteo_rows, args.work)
        sections.append("## Criteo preprocessing (generated file, two streaming passes)\n\n"
                        + pd.DataFrame(prep).to_markdown(index=False))
    table = pd.DataFrame(rows + prep)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    text = (f"# dfa-bench-bench\n\nMachine: {machine()}\n\nDate: {stamp}\n\n"
            f"Command: `dfa-bench-bench {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
            + "\n\n".join(sections) + "\n")
    print(text)
    name = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{platform.node()}"
    files.write_text(args.out / f"{name}.md", text)
    files.write_text(args.out / f"{name}.csv", table.to_csv(index=False))
    if args.widths and rows:
        plot_width(pd.DataFrame(rows), args.out / f"{name}-width.png", machine(), stamp)
    if profiles:
        files.write_text(args.out / f"{name}-profile.md", f"# dfa-bench-bench profiles\n\nMachine: {machine()}\n\n"
                         f"Date: {stamp}\n\n" + "\n\n".join(profiles) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
