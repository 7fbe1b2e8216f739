"""Learning-rate studies: each method at its own best validation learning rate (`results/tables/<task>-lr.md`).

A study's runs carry `task.protocol: lr_sweep` and one `task.lr` each (`experiment=recsys_lr`), so they stay
out of the paper's tables. Per (task, dataset, model):

- the best learning rate of each method is the one with the best mean validation metric over seeds (the
  task's `task.selection`, e.g. val_auc; maximized, or minimized for a loss or perplexity); its test metrics
  are reported as mean ± std over the seeds;
- DFA against shallow and against BP, paired by seed (one seed = one data split and one initialisation),
  each at its own best lr: mean ± std of the per-seed difference and in how many seeds DFA is ahead;
- the whole grid (test metric, mean over seeds, per method and lr; the selected lr marked);
- for models whose logit is a sum of parts (`test_auc_only_<part>`, `test_auc_without_<part>`), what each
  part scores alone and what the model scores without it, at the best lr;
- the figure `lr-<task>-<dataset>-<model>.png`: validation and test metric against the learning rate, and
  beside it DFA's alignment over training at its best lr (angle between the signal B e at each feedback
  point and the true gradient there; mean over seeds).

A generated data set studied at several sizes (`dataset.rows`, e.g. the teacher CTR data) gets a section
per size, and a data-size summary: each method at its best lr against the number of rows, with the
teacher's ceiling (`test_auc_teacher`) and what its order-2 part reaches (`test_auc_teacher_order2`),
as a table and as the figure `size-<task>-<dataset>-<model>.png`.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from dfa_bench import files
from dfa_bench.figures import METHOD_RANK, alignment_series, plot_alignment_points
from dfa_bench.plots import pyplot, save_figure

PROTOCOL = "lr_sweep"


def _config(run_dir: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"), resolve=False)


def study_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The completed runs of learning-rate studies, with their `lr` and `selection` metric name."""
    if runs.empty or "protocol" not in runs:
        return pd.DataFrame()
    sel = runs[(runs["protocol"] == PROTOCOL) & (runs["status"] == "completed")].copy()
    if sel.empty:
        return sel
    configs = [_config(p) for p in sel["path"]]
    sel["lr"] = [float(c["task"]["lr"]) for c in configs]
    sel["selection"] = [c["task"].get("selection") or "val_auc" for c in configs]
    sel["rows"] = [c["dataset"].get("rows") or 0 for c in configs]  # 0: the data set's own size
    sel["generated"] = [bool(c["dataset"].get("generated")) for c in configs]  # not real data: said so
    return sel


def _maximize(metric: str) -> bool:
    return not re.search(r"(loss|ppl)$", metric)


def _pm(values: pd.Series, digits: int) -> str:
    values = values.dropna().astype(float)
    if values.empty:
        return "–"
    return f"{values.mean():.{digits}f}" + (f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else "")


def at_edge(g: pd.DataFrame, method: str, lr: float) -> bool:
    """Whether `lr` is the smallest or largest learning rate the method was run at (a larger grid might do
    better: the table marks it)."""
    lrs = g[g["method"] == method]["lr"]
    return len(lrs.unique()) > 1 and lr in (lrs.min(), lrs.max())


def _lr(g: pd.DataFrame, method: str, lr: float) -> str:
    return f"{lr:g}" + (" (edge)" if at_edge(g, method, lr) else "")


def best_lrs(g: pd.DataFrame) -> dict[str, float]:
    """Per method, the learning rate with the best mean selection metric over seeds."""
    metric = f"metric.{g['selection'].iloc[0]}"
    means = g.groupby(["method", "lr"])[metric].mean()
    out = {}
    for method, m in means.groupby(level="method"):
        m = m.droplevel("method").dropna()
        if len(m):
            out[method] = float(m.idxmax() if _maximize(metric) else m.idxmin())
    return out


def paired(g: pd.DataFrame, best: dict[str, float], a: str, b: str, metric: str, digits: int) -> str | None:
    """'a − b' at each one's best lr, per seed: mean ± std, and in how many seeds a is ahead."""
    if a not in best or b not in best:
        return None
    col = f"metric.{metric}"
    left = g[(g["method"] == a) & (g["lr"] == best[a])].set_index("seed")[col]
    right = g[(g["method"] == b) & (g["lr"] == best[b])].set_index("seed")[col]
    diff = (left - right).dropna()
    if diff.empty:
        return None
    ahead = int((diff > 0).sum() if _maximize(metric) else (diff < 0).sum())
    return (f"{a} − {b}: {_pm(diff, digits)} ({a} ahead in {ahead} of {len(diff)} seeds; {a} at lr {best[a]:g}, "
            f"{b} at lr {best[b]:g})")


def _methods(values) -> list[str]:
    return sorted(set(values), key=lambda m: (METHOD_RANK.get(m, len(METHOD_RANK)), m))


def section(g: pd.DataFrame, digits: int = 4) -> tuple[str, dict[str, float]]:
    """The markdown of one (task, dataset, model) study and each method's best lr."""
    best = best_lrs(g)
    selection = g["selection"].iloc[0]
    tests = [m for m in ("test_auc", "test_logloss", "test_acc", "test_ppl")
             if f"metric.{m}" in g and g[f"metric.{m}"].notna().any()]
    rows = []
    for method in _methods(best):
        at = g[(g["method"] == method) & (g["lr"] == best[method])]
        rows.append({"method": method, "best lr": _lr(g, method, best[method]), selection: _pm(at[f"metric.{selection}"], digits),
                     **{m: _pm(at[f"metric.{m}"], digits) for m in tests}, "seeds": len(at)})
    text = [pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)]
    if any(at_edge(g, m, lr) for m, lr in best.items()):
        text.append("(edge): the best lr is the smallest or largest this method was run at; a wider grid might "
                    "do better.")
    first = tests[0] if tests else selection
    comparisons = [c for a, b in (("dfa", "shallow"), ("dfa", "bp"), ("bp", "shallow"))
                   if (c := paired(g, best, a, b, first, digits))]
    if comparisons:
        text.append(f"Paired by seed ({first}): " + "; ".join(comparisons) + ".")
    grid = g.groupby(["method", "lr"])[f"metric.{first}"].mean().unstack("lr")
    grid = grid.reindex(_methods(grid.index))
    shown = pd.DataFrame({f"lr {lr:g}": [f"{v:.{digits}f}" + ("*" if best.get(m) == lr else "") if pd.notna(v) else "–"
                                         for m, v in grid[lr].items()] for lr in grid.columns}, index=grid.index)
    text.append(f"All learning rates ({first}, mean over seeds; * the method's best validation lr):\n\n"
                + shown.reset_index().to_markdown(index=False, disable_numparse=True))
    parts = sorted({c.removeprefix("metric.test_auc_only_") for c in g.columns
                    if c.startswith("metric.test_auc_only_") and g[c].notna().any()})
    if parts:
        rows = []
        for method in _methods(best):
            at = g[(g["method"] == method) & (g["lr"] == best[method])]
            row = {"method": method, "whole model": _pm(at["metric.test_auc"], digits)}
            for part in parts:
                row[f"{part} alone"] = _pm(at[f"metric.test_auc_only_{part}"], digits)
                row[f"without {part}"] = _pm(at[f"metric.test_auc_without_{part}"], digits)
            rows.append(row)
        text.append("Test AUC of each part of the logit alone and of the model without it, at the best lr (the "
                    "deep part's contribution is `whole model` − `without deep`):\n\n"
                    + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True))
    return "\n\n".join(text), best


def figure(g: pd.DataFrame, best: dict[str, float], title: str, path: Path) -> Path:
    """Validation (dashed) and test (solid) metric against the learning rate, mean ± std over seeds; DFA's
    alignment over training at its best lr."""
    selection = g["selection"].iloc[0]
    test = selection.replace("val_", "test_", 1)
    plt = pyplot()
    fig, (ax, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, method in enumerate(_methods(g["method"])):
        m = g[g["method"] == method]
        for metric, style in ((selection, "--"), (test, "-")):
            col = f"metric.{metric}"
            if col not in m:
                continue
            stats = m.groupby("lr")[col].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), linestyle=style, marker="o",
                        markersize=3, capsize=2, color=f"C{i}", label=f"{method} {metric}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (Adam)")
    ax.set_ylabel(test)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    dfa = g[(g["method"] == "dfa") & (g["lr"] == best.get("dfa"))]
    series = [s for s in (alignment_series(Path(p)) for p in dfa["path"]) if not s.empty]
    plot_alignment_points(right, series)
    right.set_title(f"DFA at its best lr ({best.get('dfa', float('nan')):g}): alignment at each feedback point, "
                    f"mean over {len(series)} seed(s)", fontsize=9)
    return save_figure(fig, path)


REFERENCES = {"test_auc_teacher": "teacher (ceiling)", "test_auc_teacher_order2": "teacher's order-2 part"}


def size_summary(sizes: dict[int, pd.DataFrame], title: str, path: Path) -> tuple[str, Path]:
    """Each method at its best lr (test metric, mean ± std over seeds) against the data size, with the
    teacher's references: a markdown table and a figure."""
    rows, curves = [], {}
    for n, g in sorted(sizes.items()):
        best = best_lrs(g)
        row = {"rows": f"{n:,}"}
        for method in _methods(best):
            at = g[(g["method"] == method) & (g["lr"] == best[method])]["metric.test_auc"]
            row[method] = f"{_pm(at, 4)} (lr {_lr(g, method, best[method])})"
            curves.setdefault(method, []).append((n, at.mean(), at.std(ddof=1) if len(at) > 1 else 0.0))
        for col, name in REFERENCES.items():
            if f"metric.{col}" in g and g[f"metric.{col}"].notna().any():
                row[name] = f"{g[f'metric.{col}'].mean():.4f}"
                curves.setdefault(name, []).append((n, g[f"metric.{col}"].mean(), 0.0))
        if diff := paired(g, best, "dfa", "shallow", "test_auc", 4):
            row["dfa − shallow"] = diff.split(": ", 1)[1].split(" (")[0]
        rows.append(row)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (name, points) in enumerate(curves.items()):
        n, mean, std = zip(*points)
        style = {"linestyle": ":", "color": "grey" if "ceiling" in name else "black"} if name in REFERENCES.values() \
            else {"marker": "o", "color": f"C{i}"}
        ax.errorbar(n, mean, yerr=std, capsize=2, label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("rows in the data set (80% train)")
    ax.set_ylabel("test AUC at the method's best validation lr")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return pd.DataFrame(rows).fillna("–").to_markdown(index=False, disable_numparse=True), save_figure(fig, path)


def write_lr_studies(runs: pd.DataFrame, tables: Path, figures: Path) -> list[Path]:
    """One table per task (`<task>-lr.md`) with a section per (dataset, size, model), one figure per section,
    and a data-size summary where a data set was studied at several sizes."""
    study = study_runs(runs)
    written = []
    for task, t in (study.groupby("task") if not study.empty else []):
        sections, summary = [], []
        for (dataset, model), d in t.groupby(["dataset", "model"]):
            sizes = {int(n): g for n, g in d.groupby("rows")}
            if len(sizes) > 1:
                text, fig = size_summary(sizes, f"{task} {dataset} {model}: each method at its best lr against the "
                                         "data size", figures / f"size-{task}-{dataset}-{model}.png")
                kind = " (generated data)" if d["generated"].any() else ""
                sections.append(f"## {dataset}{kind}, {model}: against the data size\n\n{text}")
                written.append(fig)
            for n, g in sizes.items():
                body, best = section(g)
                lrs = ", ".join(f"{lr:g}" for lr in sorted(g["lr"].unique()))
                kind = "generated, " if g["generated"].any() else ""
                name, stem = (f"{dataset} ({kind}{n:,} rows)", f"{dataset}-{n}") if n else (dataset, dataset)
                seeds = g["seed"].nunique()
                sections.append(f"## {name}, {model}\n\nLearning rates {lrs}; {seeds} seed{'s' if seeds != 1 else ''}; "
                                f"{len(g)} completed runs.\n\n{body}")
                written.append(figure(g, best, f"{task} {name} {model}: each method against the learning rate",
                                      figures / f"lr-{task}-{stem}-{model}.png"))
                first = "test_auc" if "metric.test_auc" in g else g["selection"].iloc[0]
                pairs = [c for a, b in (("dfa", "shallow"), ("dfa", "bp")) if (c := paired(g, best, a, b, first, 4))]
                if pairs:
                    summary.append(f"- {name}, {model}: " + "; ".join(pairs))
        header = (f"# {task}: each method at its own best learning rate\n\nRuns of `task.protocol={PROTOCOL}` "
                  "(e.g. `make sweep-recsys-lr`): one Adam learning rate `task.lr` for every method in place of the "
                  "model's per-method setting; the other settings are the model's per method. The best lr is the one "
                  "with the best mean validation metric; cells are mean ± std over seeds. Regenerated by "
                  "`dfa-bench-tables`; do not edit by hand.\n\n")
        if summary:
            header += ("## Summary: DFA against shallow and BP, each at its own best lr, paired by seed\n\n"
                       + "\n".join(summary) + "\n\n")
        path = tables / f"{task}-lr.md"
        files.write_text(path, header + "\n\n".join(sections) + "\n")
        written.append(path)
    return written
