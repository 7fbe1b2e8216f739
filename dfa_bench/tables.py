"""`dfa-bench-tables`: the paper's comparison tables, regenerated from every finished run's summary.json.

    dfa-bench-tables                       # reads results/, writes results/tables/<table>.{md,csv,tex}
    dfa-bench-tables --results DIR --out DIR --figures DIR

Also written: alignment.md (each feedback method's angle per layer at the end of training),
bottleneck.md, and the figures of `dfa_bench.figures` (alignment over training per model and method, the
bottleneck study) in results/figures/.

Cells are mean ± std over seeds with the number of seeds; runs that diverged or failed are counted and
shown, never silently dropped. When a configuration was run more than once with the same seed, the
latest finished run counts; runs moved aside by `resume=false` (replaced-*/) are not read. A cell is
one (task, dataset, model [variant], method): keep runs with other hyperparameters in another results
folder (`--results`), or they are pooled into the same cell. Published values (dfa_bench/published.csv, one file for every table) stand
beside ours, labelled with their source; add the DFA paper's own cells there when you have them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from dfa_bench import files
from dfa_bench.figures import all_figures, bottleneck_table, is_feedback_method

METHOD_ORDER = ["bp", "dfa", "shallow", "fa", "drtp", "random_feedback"]


@dataclass(frozen=True)
class TableSpec:
    """One of the paper's tables: which runs, which metric, how cells are laid out."""

    name: str
    task: str
    metrics: tuple[str, ...]
    title: str
    scale: float = 1.0
    digits: int = 3
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, datasets): a mean-over-datasets table

SYNTHETIC = ("chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship")
LLFF = ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex")


TABLES = [
    TableSpec("graph", "gcn", ("test_acc",),
              "Table 3: node classification, test accuracy (%) at the epoch of best validation accuracy",
              scale=100.0, digits=1),
    TableSpec("gae", "gae", ("test_auc", "test_ap"),
              "Table 4: graph autoencoder link prediction, test AUC and AP (%) at the epoch of best validation AUC",
              scale=100.0, digits=1),
    TableSpec("recsys", "recsys", ("test_auc", "test_logloss"),
              "Table 2: click-through rate, test AUC and log-loss at the epoch of best validation AUC", digits=4),
    TableSpec("lm", "lm", ("val_ppl", "test_ppl"),
              "Table 5: Transformer language model, perplexity at the epoch of lowest validation loss", digits=1),
    TableSpec("nerf", "nerf", ("test_psnr", "test_ssim"),
              "Table A.5: NeRF view synthesis per scene, test PSNR (dB) and SSIM over all test views", digits=2,
              groups=(("synthetic", SYNTHETIC), ("llff", LLFF))),
    TableSpec("image", "image", ("test_acc",),
              "Companion paper (arXiv 1906.04554): image classification with the FC network, test accuracy (%) at "
              "the epoch of best validation accuracy", scale=100.0, digits=1),
]


def read_runs(results: Path) -> pd.DataFrame:
    """One row per run directory holding a summary.json (the latest run of each configuration and seed)."""
    rows = []
    for path in sorted(Path(results).rglob("summary.json")):
        if any(part.startswith("replaced-") for part in path.parts):
            continue  # a run that was started over (resume=false): kept, not counted
        try:
            s = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"dfa-bench-tables: skipping unreadable {path}: {err}", file=sys.stderr)
            continue
        row = {k: s.get(k) for k in ("task", "dataset", "model", "method", "seed", "status", "finished")}
        if s.get("variant"):  # e.g. the LM's placement and optimizer: one table row each
            row["model"] = f"{row['model']} ({s['variant']})"
        if s.get("method_variant"):  # e.g. random_feedback (noise)
            row["method"] = f"{row['method']} ({s['method_variant']})"
        row.update({f"metric.{k}": v for k, v in (s.get("metrics") or {}).items()})
        row.update({k: v for k, v in (s.get("alignment") or {}).items() if k.startswith("align/")})
        row["path"] = str(path.parent)
        rows.append(row)
    runs = pd.DataFrame(rows)
    if runs.empty:
        return runs
    runs["completed"] = runs["status"] == "completed"
    runs = runs.sort_values(["completed", "finished"], na_position="first")
    key = ["task", "dataset", "model", "method", "seed"]
    return runs.drop_duplicates(key, keep="last").reset_index(drop=True)


def published() -> pd.DataFrame:
    with resources.files("dfa_bench").joinpath("published.csv").open() as f:
        return pd.read_csv(f)


TIDY_COLUMNS = ["dataset", "model", "method", "metric", "mean", "std", "n", "diverged", "failed"]


def aggregate(runs: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Tidy table: dataset, model, method, metric, mean, std, n (completed seeds), diverged, failed."""
    sel = runs[runs["task"] == spec.task] if not runs.empty else runs
    out = []
    for (dataset, model, method), g in (sel.groupby(["dataset", "model", "method"]) if len(sel) else []):
        done = g[g["status"] == "completed"]
        for metric in spec.metrics:
            col = f"metric.{metric}"
            values = (done[col].dropna().astype(float) * spec.scale) if col in done else pd.Series(dtype=float)
            out.append({
                "dataset": dataset, "model": model, "method": method, "metric": metric,
                "mean": values.mean() if len(values) else float("nan"),
                "std": values.std(ddof=1) if len(values) > 1 else float("nan"),
                "n": int(len(values)),
                "diverged": int((g["status"] == "diverged").sum()),
                "failed": int((g["status"] == "failed").sum()),
            })
    return pd.DataFrame(out, columns=TIDY_COLUMNS)


def _cell(r, digits: int) -> str:
    if r["n"] == 0:
        text = "–"
    elif r["n"] == 1:
        text = f"{r['mean']:.{digits}f} (n=1)"
    else:
        text = f"{r['mean']:.{digits}f} ± {r['std']:.{digits}f} (n={r['n']})"
    extra = [f"{r[k]} {k}" for k in ("diverged", "failed") if r[k]]
    return text + (f" [{', '.join(extra)}]" if extra else "")


def wide(tidy: pd.DataFrame, refs: pd.DataFrame, spec: TableSpec) -> tuple[pd.DataFrame, list[str]]:
    """Rows = model, columns = dataset x method (x metric), then the published values beside them."""
    datasets = sorted(tidy["dataset"].unique())
    methods = [m for m in METHOD_ORDER if m in set(tidy["method"])] + sorted(set(tidy["method"]) - set(METHOD_ORDER))
    refs = refs[(refs["task"] == spec.task) & refs["metric"].isin(spec.metrics)]
    # Published values of a dataset we did not run (e.g. the full Criteo beside our sample) go last.
    ref_only = sorted(set(refs["dataset"]) - set(datasets))
    sources = sorted(refs["source"].unique())
    table = pd.DataFrame(index=sorted(set(tidy["model"]) | set(refs["model"])))
    table.index.name = "model"

    def label(dataset: str, method: str, metric: str) -> str:
        if len(spec.metrics) == 1:
            return f"{dataset} {method}"
        all_test = all(m.startswith("test_") for m in spec.metrics)
        return f"{dataset} {method} {metric.removeprefix('test_') if all_test else metric}"

    for dataset in [*datasets, *ref_only]:
        for method in methods if dataset in datasets else []:
            for metric in spec.metrics:
                sel = tidy[(tidy["dataset"] == dataset) & (tidy["method"] == method) & (tidy["metric"] == metric)]
                table[label(dataset, method, metric)] = pd.Series(
                    {r["model"]: _cell(r, spec.digits) for _, r in sel.iterrows()}, dtype=object)
        for method in METHOD_ORDER:
            for metric in spec.metrics:
                ref = refs[(refs["dataset"] == dataset) & (refs["method"] == method) & (refs["metric"] == metric)]
                if ref.empty:
                    continue
                cells = {}
                for _, r in ref.iterrows():
                    value = f"{r['value'] * spec.scale:.{spec.digits}f}"
                    if pd.notna(r["std"]):
                        value += f" ± {r['std'] * spec.scale:.{spec.digits}f}"
                    cells[r["model"]] = f"{value} [{sources.index(r['source']) + 1}]"
                table[label(dataset, method, metric) + " (published)"] = pd.Series(cells, dtype=object)
    return table.fillna("–"), sources


def group_means(tidy: pd.DataFrame, spec: TableSpec) -> str:
    """Table 1 style: per method, the mean over a group's scenes of the per-scene means (scenes counted)."""
    rows = []
    for (model, method), g in tidy.groupby(["model", "method"]):
        row = {"model": model, "method": method}
        for name, members in spec.groups:
            for metric in spec.metrics:
                sel = g[g["dataset"].isin(members) & (g["metric"] == metric) & (g["n"] > 0)]
                row[f"{name} {metric}"] = (f"{sel['mean'].mean():.{spec.digits}f} ({len(sel)}/{len(members)} scenes)"
                                           if len(sel) else "–")
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def write_table(spec: TableSpec, runs: pd.DataFrame, out: Path) -> Path | None:
    tidy = aggregate(runs, spec)
    if tidy.empty:
        return None
    table, sources = wide(tidy, published(), spec)
    notes = [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    completed = int(tidy[tidy["metric"] == spec.metrics[0]]["n"].sum())
    header = (f"# {spec.title}\n\nRegenerated by `dfa-bench-tables` from {completed} completed runs "
              f"on {time.strftime('%Y-%m-%d')}; do not edit by hand. Cells: mean ± std over seeds (n = seeds).\n\n")
    body = table.to_markdown() + "\n\n" + "\n".join(notes) + "\n"
    if spec.groups:
        body += ("\n## Mean over each group's scenes (the paper's Table 1 layout)\n\n"
                 "Published BP NeRF means (Mildenhall et al. 2020, Table 1): synthetic 31.01 dB, LLFF 26.50 dB.\n\n"
                 + group_means(tidy, spec) + "\n")
    files.write_text(out / f"{spec.name}.md", header + body)
    files.write_text(out / f"{spec.name}.csv", tidy.to_csv(index=False))
    latex = table.to_latex(caption=spec.title, label=f"tab:{spec.name}").replace("±", r"$\pm$")
    files.write_text(out / f"{spec.name}.tex", latex + "\n".join(f"% {n}" for n in notes) + "\n")
    return out / f"{spec.name}.md"


def write_alignment_table(runs: pd.DataFrame, out: Path) -> Path | None:
    """The angle between each method's updates and true gradients at the end of training, per layer."""
    cols = [c for c in runs.columns if c.startswith("align/param/") and c.endswith("weight")]
    done = runs[is_feedback_method(runs["method"]) & (runs["status"] == "completed")]
    if not cols or done.empty:
        return None
    rows = []
    for (task, dataset, model, method), g in done.groupby(["task", "dataset", "model", "method"]):
        for col in cols:
            values = g[col].dropna().astype(float)
            if len(values):
                rows.append({"task": task, "dataset": dataset, "model": model, "method": method,
                             "layer": col.removeprefix("align/param/"),
                             "angle (deg)": f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1
                             else f"{values.mean():.1f}", "n": len(values)})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    header = ("# Alignment at the end of training\n\nAngle in degrees between each weight's update under the method "
              "and its true backprop gradient, on the last measured batch (0 = same direction, 90 = orthogonal); "
              f"mean ± std over seeds. Regenerated by `dfa-bench-tables` on {time.strftime('%Y-%m-%d')}.\n\n")
    files.write_text(out / "alignment.md", header + table.to_markdown(index=False) + "\n")
    files.write_text(out / "alignment.csv", table.to_csv(index=False))
    files.write_text(out / "alignment.tex", table.to_latex(index=False, caption="Alignment at the end of training",
                                                          label="tab:alignment").replace("±", r"$\pm$"))
    return out / "alignment.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dfa-bench-tables", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="where runs are (default: results)")
    parser.add_argument("--out", type=Path, default=None, help="where tables go (default: <results>/tables)")
    parser.add_argument("--figures", type=Path, default=None, help="where figures go (default: <results>/figures)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"dfa-bench-tables: no results folder {args.results}", file=sys.stderr)
        return 2
    runs = read_runs(args.results)
    if runs.empty:
        print(f"dfa-bench-tables: no summary.json under {args.results}", file=sys.stderr)
        return 2
    out = args.out or args.results / "tables"
    written = [p for spec in TABLES if (p := write_table(spec, runs, out)) is not None]
    if (p := write_alignment_table(runs, out)) is not None:
        written.append(p)
    if (text := bottleneck_table(runs)) is not None:
        files.write_text(out / "bottleneck.md", "# Bottleneck study (companion paper, arXiv 1906.04554)\n\n"
                         "DFA runs of `experiment=bottleneck*`: mean per-sample cosine between the DFA signal and the "
                         "true gradient at each hidden layer at the end of training, and accuracy at the last epoch (%), "
                         f"mean over seeds. Regenerated by `dfa-bench-tables` on {time.strftime('%Y-%m-%d')}.\n\n"
                         + text + "\n")
        written.append(out / "bottleneck.md")
    written += all_figures(runs, args.figures or args.results / "figures")
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
