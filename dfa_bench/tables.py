"""`dfa-bench-tables`: the paper's comparison tables, regenerated from every finished run's summary.json.

    dfa-bench-tables                       # reads results/, writes results/tables/<table>.{md,csv,tex}
    dfa-bench-tables --results DIR --out DIR

Cells are mean ± std over seeds with the number of seeds; runs that diverged or failed are counted and
shown, never silently dropped. When a configuration was run more than once with the same seed, the
latest finished run counts. Published values (dfa_bench/published.csv, one file for every table) stand
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

METHOD_ORDER = ["bp", "dfa", "shallow"]


@dataclass(frozen=True)
class TableSpec:
    """One of the paper's tables: which runs, which metric, how cells are laid out."""

    name: str
    task: str
    metric: str
    title: str
    scale: float = 1.0
    digits: int = 3


TABLES = [
    TableSpec("graph", "gcn", "test_acc", "Table 3: node classification, test accuracy (%) at best validation epoch",
              scale=100.0, digits=1),
]


def read_runs(results: Path) -> pd.DataFrame:
    """One row per run directory holding a summary.json (the latest run of each configuration and seed)."""
    rows = []
    for path in sorted(Path(results).rglob("summary.json")):
        try:
            s = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"dfa-bench-tables: skipping unreadable {path}: {err}", file=sys.stderr)
            continue
        row = {k: s.get(k) for k in ("task", "dataset", "model", "method", "seed", "status", "finished")}
        row.update({f"metric.{k}": v for k, v in (s.get("metrics") or {}).items()})
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


def aggregate(runs: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Tidy table: dataset, model, method, mean, std, n (completed seeds), diverged, failed."""
    sel = runs[runs["task"] == spec.task]
    col = f"metric.{spec.metric}"
    out = []
    for (dataset, model, method), g in sel.groupby(["dataset", "model", "method"]):
        done = g[g["status"] == "completed"]
        values = done[col].astype(float) * spec.scale if col in done else pd.Series(dtype=float)
        out.append({
            "dataset": dataset, "model": model, "method": method,
            "mean": values.mean() if len(values) else float("nan"),
            "std": values.std(ddof=1) if len(values) > 1 else float("nan"),
            "n": int(len(values)),
            "diverged": int((g["status"] == "diverged").sum()),
            "failed": int((g["status"] == "failed").sum()),
        })
    return pd.DataFrame(out, columns=["dataset", "model", "method", "mean", "std", "n", "diverged", "failed"])


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
    """Rows = model, columns = dataset x method, then the published values for that dataset."""
    datasets = sorted(tidy["dataset"].unique())
    methods = [m for m in METHOD_ORDER if m in set(tidy["method"])] + sorted(set(tidy["method"]) - set(METHOD_ORDER))
    refs = refs[(refs["task"] == spec.task) & (refs["metric"] == spec.metric)
                & refs["dataset"].isin(datasets) & refs["model"].isin(tidy["model"])]
    sources = sorted(refs["source"].unique())
    table = pd.DataFrame(index=sorted(tidy["model"].unique()))
    table.index.name = "model"
    for dataset in datasets:
        for method in methods:
            cells = {}
            for _, r in tidy[(tidy["dataset"] == dataset) & (tidy["method"] == method)].iterrows():
                cells[r["model"]] = _cell(r, spec.digits)
            table[f"{dataset} {method}"] = pd.Series(cells)
        for method in methods:
            ref = refs[(refs["dataset"] == dataset) & (refs["method"] == method)]
            if ref.empty:
                continue
            cells = {}
            for _, r in ref.iterrows():
                value = f"{r['value'] * spec.scale:.{spec.digits}f}"
                if pd.notna(r["std"]):
                    value += f" ± {r['std'] * spec.scale:.{spec.digits}f}"
                cells[r["model"]] = f"{value} [{sources.index(r['source']) + 1}]"
            table[f"{dataset} {method} (published)"] = pd.Series(cells)
    return table.fillna("–"), sources


def write_table(spec: TableSpec, runs: pd.DataFrame, out: Path) -> Path | None:
    tidy = aggregate(runs, spec)
    if tidy.empty:
        return None
    table, sources = wide(tidy, published(), spec)
    notes = [f"[{i + 1}] {s} (published backprop value, not from the DFA paper)" for i, s in enumerate(sources)]
    header = (f"# {spec.title}\n\nRegenerated by `dfa-bench-tables` from {int(tidy['n'].sum())} completed runs "
              f"on {time.strftime('%Y-%m-%d')}; do not edit by hand. Cells: mean ± std over seeds (n = seeds).\n\n")
    files.write_text(out / f"{spec.name}.md", header + table.to_markdown() + "\n\n" + "\n".join(notes) + "\n")
    files.write_text(out / f"{spec.name}.csv", tidy.to_csv(index=False))
    latex = table.to_latex(caption=spec.title, label=f"tab:{spec.name}").replace("±", r"$\pm$")
    files.write_text(out / f"{spec.name}.tex", latex + "\n".join(f"% {n}" for n in notes) + "\n")
    return out / f"{spec.name}.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dfa-bench-tables", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="where runs are (default: results)")
    parser.add_argument("--out", type=Path, default=None, help="where tables go (default: <results>/tables)")
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
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
