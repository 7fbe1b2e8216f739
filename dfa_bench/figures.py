"""Figures over many runs, written to results/figures/ by `dfa-bench-tables`.

- `alignment-<task>-<dataset>-<model>-<method>.png`: the angle between each feedback point's signal and
  its true gradient over training, mean over seeds (shaded: min to max), for every method that measures
  alignment (dfa, fa, drtp, random_feedback). The companion paper's per-layer alignment curves.
- `bottleneck-<dataset>-<mode>.png`: the bottleneck study (`experiment=bottleneck*`): per-sample cosine
  between the DFA signal and the true gradient at each hidden layer, and test accuracy, against the width
  of the narrow layer, beside the companion paper's published CIFAR-10 values (`published_bottleneck.csv`).
- `tsne-<dataset>-<model>.png`: the t-SNE panels (`task.tsne=true`, the paper's Figure 2) of one seed per
  method side by side.
- `nerf-<scene>-<model>.png`: the first test view's ground truth | render of one seed per method, one row
  per method.
- `nerf-psnr-<scene>-<model>.png`: validation PSNR against the iteration per method (mean over seeds), with
  the paper's published DFA model's test PSNR on that scene as reference lines, one per image size it was
  evaluated at (`make eval-nerf-published`); the title gives the runs' image scale. Only a line at the
  runs' own scale is like for like.
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from dfa_bench.methods import METHODS
from dfa_bench.plots import pyplot, save_figure

FEEDBACK_METHODS = ("dfa", "fa", "drtp", "random_feedback")
METHOD_RANK = {m: i for i, m in enumerate(METHODS)}  # the order (and colour) of methods in tables and figures


def is_feedback_method(methods: pd.Series) -> pd.Series:
    """Which table method labels (e.g. "random_feedback (noise)") name a method that measures alignment."""
    return methods.str.split(" ").str[0].isin(FEEDBACK_METHODS)


def model_label(model: str, variant: str) -> str:
    """How tables and figures name a model run in a variant: "transformer (macro adam lr=0.001 b2=0.999)"."""
    return f"{model} ({variant})" if variant else model


def _metric_rows(run_dir: Path):
    """The readable lines of one run's metrics.jsonl, as dicts (none if it has no such file)."""
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def alignment_series(run_dir: Path) -> pd.DataFrame:
    """Step x align/point/* angles of one run (empty if it logged none)."""
    rows = []
    for r in _metric_rows(run_dir):
        points = {k.removeprefix("align/point/"): v for k, v in r.items() if k.startswith("align/point/")}
        if points:
            rows.append({"step": r["step"], **points})
    return pd.DataFrame(rows).set_index("step") if rows else pd.DataFrame()


def plot_alignment_points(ax, series: list[pd.DataFrame], top: float = 100) -> None:
    """On `ax`: per feedback point, the angle over training, mean over runs (shaded: min to max)."""
    for point in sorted({c for s in series for c in s.columns}):
        table = pd.concat([s[point] for s in series if point in s.columns], axis=1).sort_index()
        steps = table.index.to_numpy()
        ax.plot(steps, table.mean(axis=1), label=point, linewidth=1.3)
        if table.shape[1] > 1:
            ax.fill_between(steps, table.min(axis=1), table.max(axis=1), alpha=0.2)
    ax.axhline(90, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, top)
    ax.set_xlabel("step")
    ax.set_ylabel("angle to the true gradient (degrees)")
    if series:
        ax.legend(fontsize=7, loc="best")


def alignment_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per (task, dataset, model, method) of the feedback methods: angles over training."""
    if runs.empty:
        return []
    done = runs[is_feedback_method(runs["method"]) & (runs["status"] == "completed")]
    written = []
    for (task, dataset, model, variant, method), g in done.groupby(["task", "dataset", "model", "variant", "method"]):
        model = model_label(model, variant)
        series = [s for s in (alignment_series(Path(p)) for p in g["path"]) if not s.empty]
        if not series:
            continue
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4))
        plot_alignment_points(ax, series, top=180 if method.startswith("random_feedback") else 100)
        ax.set_title(f"{task} {dataset} {model}, {method}: mean over {len(series)} seed(s)", fontsize=9)
        written.append(save_figure(fig, out / f"alignment-{task}-{dataset}-{_safe(model)}-{_safe(method)}.png"))
    return written


def bottleneck_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Image-task DFA runs with a bottleneck: dataset, mode, size, cosines per point, accuracies."""
    if runs.empty:
        return pd.DataFrame()
    sel = runs[(runs["task"] == "image") & (runs["method"] == "dfa") & (runs["status"] == "completed")]
    rows = []
    for _, r in sel.iterrows():
        config = Path(r["path"]) / "config.yaml"
        if not config.exists():
            continue
        bottleneck = OmegaConf.load(config).model.get("bottleneck") or {}
        if bottleneck.get("size") is None:
            continue
        row = {"dataset": r["dataset"], "mode": bottleneck.get("mode", "mask"), "layer": bottleneck.get("layer"),
               "size": int(bottleneck["size"]), "seed": r["seed"],
               "train_acc": r.get("metric.train_acc"), "test_acc": r.get("metric.test_acc")}  # at the best val epoch
        row.update({k.removeprefix("align/sample_cos/"): r[k] for k in r.index
                    if k.startswith("align/sample_cos/") and pd.notna(r[k])})
        rows.append(row)
    return pd.DataFrame(rows)


def published_bottleneck() -> pd.DataFrame:
    with resources.files("dfa_bench").joinpath("published_bottleneck.csv").open() as f:
        return pd.read_csv(f, comment="#")


def bottleneck_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    table = bottleneck_runs(runs)
    if table.empty:
        return []
    paper = published_bottleneck()
    written = []
    for (dataset, mode), g in table.groupby(["dataset", "mode"]):
        g = g.groupby("size").mean(numeric_only=True).sort_index()
        points = sorted(c for c in g.columns if c.startswith("points."))
        plt = pyplot()
        fig, (ax, acc) = plt.subplots(1, 2, figsize=(11, 4))
        for point in points:
            i = int(point.split(".")[1])
            label = f"hidden layer {i + 1}" + (" (the bottleneck)" if i == int(g["layer"].iloc[0]) else "")
            ax.plot(g.index, g[point], marker="o", label=f"{label}, ours ({dataset})")
        for i, column in enumerate(("cos_tanh1", "cos_tanh2", "cos_tanh3")):
            ax.plot(paper["size"], paper[column], linestyle="--", color=f"C{i}", alpha=0.6,
                    label=f"hidden layer {i + 1}, paper (CIFAR-10)")
        ax.set_xscale("log")
        ax.set_xlabel("bottleneck width b (units of the narrow layer)")
        ax.set_ylabel("mean per-sample cosine, DFA signal vs true gradient")
        ax.set_title(f"Alignment against bottleneck width ({mode})", fontsize=10)
        ax.legend(fontsize=6.5, loc="best")
        for column, style, color in (("train_acc", "-o", "C0"), ("test_acc", "-s", "C2")):
            acc.plot(g.index, 100 * g[column], style, color=color, label=f"{column.replace('_acc', '')}, ours ({dataset})")
            acc.plot(paper["size"], paper[column], "--", color=color, alpha=0.6,
                     label=f"{column.replace('_acc', '')}, paper (CIFAR-10)")
        acc.set_xscale("log")
        acc.set_xlabel("bottleneck width b")
        acc.set_ylabel("accuracy at the epoch of best validation accuracy (%)")
        acc.legend(fontsize=7, loc="best")
        written.append(save_figure(fig, out / f"bottleneck-{dataset}-{mode}.png"))
    return written


def bottleneck_table(runs: pd.DataFrame) -> str | None:
    """Markdown: per dataset, mode and width, the cosines and accuracies (mean over seeds)."""
    table = bottleneck_runs(runs)
    if table.empty:
        return None
    cols = sorted(c for c in table.columns if c.startswith("points."))
    g = table.groupby(["dataset", "mode", "size"])[[*cols, "train_acc", "test_acc"]].mean().reset_index()
    g[["train_acc", "test_acc"]] = (100 * g[["train_acc", "test_acc"]]).round(1)
    g[cols] = g[cols].astype(float).round(3)
    g = g.rename(columns={c: f"cos layer {int(c.split('.')[1]) + 1}" for c in cols})
    return g.to_markdown(index=False)


def _panels(runs: pd.DataFrame, image: str, per_row: int, size: tuple[float, float], name: str,
            out: Path) -> list[Path]:
    """Per (dataset, model): the `image` (a path in the run folder) of the lowest seed of every method,
    `per_row` panels to a row, titled by method, in one figure `<name>-<dataset>-<model>.png`."""
    if runs.empty:
        return []
    have = runs[(runs["status"] == "completed") & runs["path"].map(lambda p: (Path(p) / image).exists())]
    written = []
    for (dataset, model), g in have.groupby(["dataset", "model"]):
        g = g.sort_values("seed").drop_duplicates("method")
        g = g.sort_values("method", key=lambda s: s.map(lambda m: METHOD_RANK.get(m.split(" ")[0], 99)))
        plt = pyplot()
        cols = min(per_row, len(g))
        rows = -(-len(g) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, (_, r) in zip(axes.flat, g.iterrows()):
            ax.imshow(plt.imread(Path(r["path"]) / image))
            ax.set_title(r["method"], fontsize=9)
        written.append(save_figure(fig, out / f"{name}-{dataset}-{_safe(model)}.png"))
    return written


def tsne_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Per (dataset, model): the tsne.png of the lowest seed of every method, three to a row."""
    return _panels(runs, "tsne.png", 3, (4.5, 4.6), "tsne", out)


def nerf_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Per (scene, model): the first test view, ground truth | render, one row per method."""
    return _panels(runs[runs["task"] == "nerf"] if not runs.empty else runs,
                   "renders/test_000_truth_vs_render.png", 1, (6.0, 3.2), "nerf", out)


def nerf_psnr_figures(runs: pd.DataFrame, out: Path, published: pd.DataFrame | None = None) -> list[Path]:
    """Per (scene, model, variant): validation PSNR against the iteration, one line per method."""
    if runs.empty:
        return []
    done = runs[(runs["task"] == "nerf") & (runs["status"] == "completed")]
    written = []
    for (scene, model, variant), g in done.groupby(["dataset", "model", "variant"]):
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for method, m in sorted(g.groupby("method"), key=lambda kv: (METHOD_RANK.get(kv[0], 99), kv[0])):
            curves = [c for c in (_metric_series(Path(p), "val_psnr") for p in m["path"]) if not c.empty]
            if curves:
                table = pd.concat(curves, axis=1).sort_index()
                ax.plot(table.index, table.mean(axis=1), marker="o", markersize=3, label=f"{method} ({len(curves)} seed(s))",
                        color=f"C{METHOD_RANK.get(method, len(METHOD_RANK))}")
        if not ax.lines:
            plt.close(fig)
            continue
        ref = published[(published["dataset"] == scene) & (published["metric"] == "test_psnr")] \
            if published is not None and len(published) else pd.DataFrame()
        for i, (_, r) in enumerate(ref.iterrows()):
            size = f" at {r['image_size']}" if r.get("image_size") else ""
            ax.axhline(r["value"], color="grey", linestyle=(":", "--", "-.")[i % 3],
                       label=f"the paper's published {r['method'].upper()} model{size} (test), {r['value']:.2f} dB")
        scales = sorted({nerf_downscale(Path(p)) for p in g["path"]})
        ax.set_xlabel("iteration")
        ax.set_ylabel("validation PSNR (dB)")
        ax.set_title(f"{scene}, {model_label(model, variant)}: validation PSNR over training (images at "
                     f"{' and '.join(f'1/{f}' for f in scales)} of full size)", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        written.append(save_figure(fig, out / f"nerf-psnr-{scene}-{_safe(model_label(model, variant))}.png"))
    return written


def nerf_downscale(run_dir: Path) -> int:
    """A NeRF run's image scale divisor (`dataset.downscale` of its config.yaml; 1 when not given)."""
    config = run_dir / "config.yaml"
    return int(OmegaConf.load(config).dataset.get("downscale") or 1) if config.exists() else 1


def _metric_series(run_dir: Path, metric: str) -> pd.Series:
    """step -> `metric` of one run's metrics.jsonl (empty if it logged none)."""
    return pd.Series({r["step"]: r[metric] for r in _metric_rows(run_dir) if r.get(metric) is not None}, dtype=float)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(text)).strip("_")


def all_figures(runs: pd.DataFrame, out: Path) -> list[Path]:
    return (alignment_figures(runs, out) + bottleneck_figures(runs, out) + tsne_figures(runs, out)
            + nerf_figures(runs, out))



