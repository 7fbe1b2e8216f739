"""`dfa-bench-tables`: the paper's comparison tables, regenerated from the curated runs' summary.json.

    dfa-bench-tables                  # reads results/sweeps/, writes results/tables/, results/figures/,
                                      # and the results page results/README.md
    dfa-bench-tables --results DIR    # any other folder of runs (e.g. outputs/): writes DIR/tables, DIR/figures
    dfa-bench-tables --check          # which curated runs differ from what their Makefile target makes now

Which runs count, and how:
- The default input is `results/sweeps/`, where only the Makefile's sweep targets write. Scratch runs
  (`dfa-bench ...` without `hydra.sweep.dir`, tests, debugging) go to `outputs/` and never reach a committed
  table.
- A cell pools the runs of one config identity (`config_id`, `dfa_bench.identity`: the resolved config
  without the seed and run-local keys), one per seed: the latest finished run of a (config, seed). Runs of
  one model and method whose configs differ in anything but the dataset get separate rows, named by the
  keys that differ. Only completed runs count as seeds; a diverged run is marked in its cell; failed and
  interrupted runs are counted under the table. Runs moved aside by `resume=false` (replaced-*/) are not read.
- Layout: rows = model x method, columns = datasets in the paper's order (x metric); cells mean ± std over
  seeds, the usual number of seeds in the caption and marked only on a cell that differs; published values
  (dfa_bench/published.csv) as labelled rows beneath ours. BP, DFA and shallow make the main table; the other
  methods an "extensions" table of the same shape. No date in a table: regenerating from unchanged runs
  gives no diff, and a table or figure whose runs are gone is removed from the output folders.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import pandas as pd
from omegaconf import OmegaConf

from dfa_bench import files, identity
from dfa_bench.figures import (all_figures, bottleneck_table, is_feedback_method, model_label, nerf_downscale,
                               nerf_psnr_figures)
from dfa_bench.lr_study import PROTOCOL as LR_STUDY, write_lr_studies
from dfa_bench.methods import METHODS

METHOD_ORDER = list(METHODS)  # the registry's order: bp, dfa, shallow, then the others
MAIN_METHODS = ("bp", "dfa", "shallow")
SYNTHETIC = ("chair", "drums", "ficus", "hotdog", "lego", "materials", "mic", "ship")
LLFF = ("fern", "flower", "fortress", "horns", "leaves", "orchids", "room", "trex")
DATASETS = {  # the paper's order, and how a column names each
    "cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed",
    "criteo": "Criteo", "criteo_sample": "Criteo 10k-row sample†", "movielens100k": "MovieLens-100K†",
    "movielens1m": "MovieLens-1M†", "wikitext103": "WikiText-103", "wikitext2": "WikiText-2",
    **{s: s for s in SYNTHETIC + LLFF}, "digits": "digits", "mnist": "MNIST", "cifar10": "CIFAR-10",
}
CURATED = Path("results/sweeps")


@dataclass(frozen=True)
class TableSpec:
    """One of the paper's tables: which runs, which metrics, what the cells mean."""

    name: str
    task: str
    metrics: tuple[str, ...]
    title: str
    rule: str  # which epoch's (or model's) metric a cell reports
    scale: float = 1.0
    digits: int = 3
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, datasets): a mean-over-datasets table
    note: str = ""
    protocol: str = ""  # the runs' protocol (`protocol_of`; "" = the paper's): another protocol, another table
    main_methods: tuple[str, ...] = ()  # the main table's methods (default MAIN_METHODS; the rest: Extensions)
    describe: Callable[[pd.DataFrame], str] | None = None  # a footer line drawn from the table's completed runs


def nerf_image_scales(runs: pd.DataFrame) -> str:
    """Which image scale each (model, scene)'s runs trained and were tested at (`dataset.downscale` of their
    config.yaml): our CPU-sized rows are not at the paper's full size, and a reader must see it."""
    scales: dict[str, dict[str, set[int]]] = {}
    for path, model, scene in runs[["path", "model", "dataset"]].itertuples(index=False):
        scales.setdefault(model, {}).setdefault(scene, set()).add(nerf_downscale(Path(path)))
    parts = [f"{model} on " + ", ".join(f"{scene} 1/{'/'.join(str(f) for f in sorted(fs))}"
                                        for scene, fs in sorted(by_scene.items()))
             for model, by_scene in sorted(scales.items())]
    return ("Image scale of our runs, training and test views (`dataset.downscale`; the paper's: full size, lego "
            "800 × 800): " + "; ".join(parts) + ". Published rows give the scale they were evaluated at.")


TABLES = [
    TableSpec("graph", "gcn", ("test_acc",), "Table 3: node classification, test accuracy (%)",
              "test accuracy at the epoch of best validation accuracy", scale=100.0, digits=1),
    TableSpec("dfagnn", "gcn", ("test_acc",),
              "DFA-GNN's protocol (Zhao et al. 2024, Tables 1 and 4): node classification on random 60/20/20 "
              "splits, test accuracy (%)",
              "test accuracy at the epoch of best validation accuracy, 1000 epochs; the split is drawn from the seed",
              scale=100.0, digits=1, protocol="random_60_20_20", main_methods=("bp", "dfa", "dfa_gnn", "shallow"),
              note="Published rows give their mean ± 95% confidence interval over 10 seeds; ours give mean ± std. "
                   "Their \"DFA\" row is the topology-aware DFA without pseudo-errors or node filter: ours is "
                   "`dfa_gnn (no pseudo-error, no node filter)` (`make sweep-dfagnn`'s ablation). Our `dfa` is "
                   "Launay's DFA (no graph in the feedback)."),
    TableSpec("gae", "gae", ("test_auc", "test_ap"), "Table 4: graph autoencoder link prediction, test AUC and AP (%)",
              "test AUC and AP at the epoch of best validation AUC", scale=100.0, digits=1),
    TableSpec("recsys", "recsys", ("test_auc", "test_logloss"), "Table 2: click-through rate, test AUC and log-loss",
              "test AUC and log-loss at the epoch of best validation AUC", digits=4,
              note="† Not comparable with the published full-Criteo values: the 10,000-row sample has 8,000 training "
                   "rows and MovieLens is another data set; these cells are sanity checks. They use the paper's "
                   "per-method learning rates, tuned for 36 million training rows (DFA's is 5e-5): on this little "
                   "data DFA is far from its best there. recsys-lr.md has every method at its own best "
                   "validation lr (`make sweep-recsys-lr`)."),
    TableSpec("lm", "lm", ("val_ppl", "test_ppl"), "Table 5: Transformer language model, perplexity",
              "validation and test perplexity at the epoch of lowest validation loss", digits=1),
    TableSpec("nerf", "nerf", ("test_psnr", "test_ssim"), "Table A.5: NeRF view synthesis per scene, test PSNR (dB) and SSIM",
              "PSNR and SSIM of the final model over all test views (no model selection: for LLFF scenes the "
              "held-out views are the test views)", digits=2, groups=(("synthetic", SYNTHETIC), ("llff", LLFF)),
              describe=nerf_image_scales),
    TableSpec("image", "image", ("test_acc",),
              "Companion paper (arXiv 1906.04554): image classification with the FC network, test accuracy (%)",
              "test accuracy at the epoch of best validation accuracy", scale=100.0, digits=1),
]


def _config_of(summary_path: Path) -> dict | None:
    config = summary_path.parent / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(config), resolve=False) if config.exists() else None


def read_runs(results: Path) -> pd.DataFrame:
    """One row per (config identity, seed): the latest finished run, with its metrics and `variant` label."""
    rows, configs = [], {}
    for path in sorted(Path(results).rglob("summary.json")):
        if any(part.startswith("replaced-") for part in path.parts):
            continue  # a run that was started over (resume=false): kept, not counted
        try:
            s = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"dfa-bench-tables: skipping unreadable {path}: {err}", file=sys.stderr)
            continue
        config = _config_of(path)
        # Recomputed from config.yaml, so that every run is grouped by today's definition of the identity.
        config_id = identity.config_id(config) if config else s.get("config_id") or str(path.parent)
        configs.setdefault(config_id, config)
        row = {k: s.get(k) for k in ("task", "dataset", "model", "method", "seed", "status", "finished")}
        row["config_id"] = config_id
        row["protocol"] = protocol_of(config)
        row["task_variant"] = s.get("variant") or ""  # what the task says distinguishes the run (e.g. LM optimizer)
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
    runs = runs.drop_duplicates(["config_id", "seed"], keep="last").reset_index(drop=True)
    runs["variant"] = variant_labels(runs, configs)
    return runs.drop(columns=["completed", "task_variant"])


def protocol_of(config: dict | None) -> str:
    """Which protocol a run follows, when not the paper's: its `task.protocol` (a study, e.g. the recommender's
    learning-rate study, `lr_sweep`), else a named `task.split` (DFA-GNN's `random_60_20_20`; the recommender's
    split fractions are not a name); "" for the paper's protocol. A table reads the runs of one protocol."""
    task = (config or {}).get("task") or {}
    split = task.get("split")
    return task.get("protocol") or (split if isinstance(split, str) else "")


def _short(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[2:]) if parts[:2] == ["model", "settings"] and len(parts) > 3 else key


def variant_labels(runs: pd.DataFrame, configs: dict[str, dict | None]) -> pd.Series:
    """Per run, what names its table row beside the model: the task's own variant (e.g. the LM's placement
    and optimizer), then the keys (and values) in which its config differs from the other configs of the
    same (task, protocol, model, method, task variant) once the dataset is set aside; "" when nothing differs."""
    def without_dataset(config_id: str) -> dict:
        config = configs.get(config_id) or {}
        return {k: v for k, v in identity.flatten(identity.comparable(config)).items()
                if not k.startswith(("dataset.", "scene."))}

    labels = runs["task_variant"].astype(object).copy()
    for _, g in runs.groupby(["task", "protocol", "model", "method", "task_variant"]):
        flat = {cid: without_dataset(cid) for cid in g["config_id"].unique()}
        distinct = {json.dumps(f, sort_keys=True, default=str): f for f in flat.values()}
        if len(distinct) < 2:
            continue
        keys = sorted({k for f in distinct.values() for k in f
                       if len({json.dumps(d.get(k), default=str) for d in distinct.values()}) > 1})
        for i, cid in zip(g.index, g["config_id"]):
            differs = ", ".join(f"{_short(k)}={flat[cid].get(k, 'absent')}" for k in keys)
            labels[i] = f"{labels[i]}; {differs}" if labels[i] else differs
    return labels


def published() -> pd.DataFrame:
    with resources.files("dfa_bench").joinpath("published.csv").open() as f:
        return pd.read_csv(f, keep_default_na=False, na_values=[""])


TIDY_COLUMNS = ["dataset", "model", "variant", "method", "metric", "mean", "std", "n", "diverged", "failed",
                "config_id"]


def aggregate(runs: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Tidy table: one row per (dataset, model, variant, method, metric) with mean, std, n (completed seeds),
    diverged and failed (failed or interrupted) counts, and the config identity."""
    sel = _selected(runs, spec)
    out = []
    for (dataset, model, variant, method, config_id), g in (
            sel.groupby(["dataset", "model", "variant", "method", "config_id"]) if len(sel) else []):
        done = g[g["status"] == "completed"]
        for metric in spec.metrics:
            col = f"metric.{metric}"
            values = (done[col].dropna().astype(float) * spec.scale) if col in done else pd.Series(dtype=float)
            out.append({
                "dataset": dataset, "model": model, "variant": variant, "method": method, "metric": metric,
                "mean": values.mean() if len(values) else float("nan"),
                "std": values.std(ddof=1) if len(values) > 1 else float("nan"),
                "n": int(len(values)),
                "diverged": int((g["status"] == "diverged").sum()),
                "failed": int((~g["status"].isin(["completed", "diverged"])).sum()),
                "config_id": config_id,
            })
    return pd.DataFrame(out, columns=TIDY_COLUMNS)


def _selected(runs: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The runs of a table: its task, run under its protocol."""
    return runs[(runs["task"] == spec.task) & (runs["protocol"] == spec.protocol)] if not runs.empty else runs


def _method_rank(method: str) -> tuple[int, str]:
    base = method.split(" ")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def _order(values, order) -> list:
    rank = {v: i for i, v in enumerate(order)}
    return sorted(set(values), key=lambda v: (rank.get(str(v).split(" ")[0], len(rank)), str(v)))


def _cell(r, digits: int, usual_n: int) -> str:
    if r["n"] == 0:
        text = "–"
    else:
        text = f"{r['mean']:.{digits}f}" + (f" ± {r['std']:.{digits}f}" if r["n"] > 1 else "")
        if r["n"] != usual_n:
            text += f" (n={r['n']})"
    return text + (f" [{r['diverged']} diverged]" if r["diverged"] else "")


def _column(dataset: str, metric: str, spec: TableSpec) -> str:
    name = DATASETS.get(dataset, dataset)
    if len(spec.metrics) == 1:
        return name
    all_test = all(m.startswith("test_") for m in spec.metrics)
    return f"{name} {metric.removeprefix('test_') if all_test else metric}"


def wide(tidy: pd.DataFrame, refs: pd.DataFrame, spec: TableSpec, methods) -> tuple[pd.DataFrame, list[str]]:
    """Rows = model (variant) x method, columns = dataset (x metric); published rows beneath ours."""
    tidy = tidy[tidy["method"].str.split(" ").str[0].isin(methods)]
    protocol = refs["protocol"].fillna("") if "protocol" in refs else pd.Series("", index=refs.index)
    refs = refs[(refs["task"] == spec.task) & (protocol == spec.protocol) & refs["metric"].isin(spec.metrics)
                & refs["method"].isin(methods)]
    if tidy.empty:
        return pd.DataFrame(), []
    usual_n = int(tidy[tidy["n"] > 0]["n"].mode().max()) if (tidy["n"] > 0).any() else 0
    datasets = _order([*tidy["dataset"], *refs["dataset"]], DATASETS)
    columns = [_column(d, m, spec) for d in datasets for m in spec.metrics]
    sources = sorted(refs["source"].unique())
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for _, r in tidy.iterrows():
        model = model_label(r["model"], r["variant"])
        rows.setdefault((model, r["method"]), {})[_column(r["dataset"], r["metric"], spec)] = _cell(
            r, spec.digits, usual_n)
    ours = sorted(rows, key=lambda k: (k[0], _method_rank(k[1])))
    for _, r in refs.iterrows():
        qualifier = r["qualifier"] if isinstance(r.get("qualifier"), str) else ""  # ">" for a lower bound
        text = f"{qualifier}{r['value'] * spec.scale:.{spec.digits}f}"
        if pd.notna(r["std"]):
            text += f" ± {r['std'] * spec.scale:.{spec.digits}f}"
        key = (r["model"], f"{r['method']}, published [{sources.index(r['source']) + 1}]")
        rows.setdefault(key, {})[_column(r["dataset"], r["metric"], spec)] = text
    theirs = sorted((k for k in rows if k not in set(ours)), key=lambda k: (k[0], k[1]))
    index = pd.MultiIndex.from_tuples([*ours, *theirs], names=["model", "method"])
    table = pd.DataFrame([[rows[k].get(c, "–") for c in columns] for k in index], index=index, columns=columns)
    return table, sources


def group_means(tidy: pd.DataFrame, spec: TableSpec) -> str:
    """Table 1 style: per method, the mean over a group's scenes of the per-scene means (scenes counted)."""
    rows = []
    for (model, variant, method), g in tidy.groupby(["model", "variant", "method"]):
        row = {"model": model_label(model, variant), "method": method}
        for name, members in spec.groups:
            for metric in spec.metrics:
                sel = g[g["dataset"].isin(members) & (g["metric"] == metric) & (g["n"] > 0)]
                row[f"{name} {metric}"] = (f"{sel['mean'].mean():.{spec.digits}f} ({len(sel)}/{len(members)} scenes)"
                                           if len(sel) else "–")
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def _caption(spec: TableSpec, tidy: pd.DataFrame) -> str:
    first = tidy[(tidy["metric"] == spec.metrics[0]) & (tidy["n"] > 0)]
    usual_n = int(first["n"].mode().max()) if len(first) else 0
    return (f"{spec.rule}. Cells: mean ± std over {usual_n} seed{'s' if usual_n != 1 else ''} "
            f"(a cell with another number of seeds says so: n=...); {int(first['n'].sum())} completed runs.")


def evaluated_published_models(results: Path) -> pd.DataFrame:
    """The paper's published models as scored by `mode=eval` (JSON files under `results`, written by
    `make eval-nerf-published`), as reference rows: PSNR ± its pixel-sampling standard error."""
    rows = []
    for path in sorted(Path(results).rglob("eval-*.json")):
        e = json.loads(path.read_text())
        if e.get("kind") != "published":
            continue
        method = "dfa" if "dfa" in Path(e["checkpoint"]).stem.split("_") else "unknown"
        whole = not e.get("eval_pixels")
        pixels = "all pixels of" if whole else f"{e['pixels_per_view']} seeded pixels of each of"
        size = " × ".join(str(n) for n in e["image_size"]) if e.get("image_size") else ""
        source = (f"The paper's published {method.upper()} model ({Path(e['checkpoint']).name}), evaluated by "
                  f"`dfa-bench mode=eval` on {pixels} {e['views']} test views" + (f" at {size}" if size else "")
                  + ("" if whole else "; ± is the pixel-sampling standard error"))
        common = {"task": "nerf", "dataset": e["scene"], "model": e["model"], "method": method, "source": source,
                  "image_size": size}
        rows.append({**common, "metric": "test_psnr", "value": e["psnr"], "std": None if whole else e.get("psnr_se")})
        if e.get("ssim") is not None:
            rows.append({**common, "metric": "test_ssim", "value": e["ssim"], "std": None})
    return pd.DataFrame(rows)


def write_table(spec: TableSpec, runs: pd.DataFrame, out: Path, refs: pd.DataFrame | None = None) -> Path | None:
    tidy = aggregate(runs, spec)
    if tidy.empty:
        return None
    refs = published() if refs is None else refs
    sections, latex = [], []
    main = spec.main_methods or MAIN_METHODS
    for heading, methods in (("", main),
                             ("Extensions: other training methods", tuple(m for m in METHOD_ORDER if m not in main))):
        table, sources = wide(tidy, refs, spec, methods)
        if table.empty:
            continue
        notes = "\n".join(f"[{i + 1}] {s}" for i, s in enumerate(sources))
        sections.append((f"## {heading}\n\n" if heading else "") + table.reset_index().to_markdown(index=False, disable_numparse=True)
                        + ("\n\n" + notes if notes else ""))
        latex.append(table.to_latex(caption=f"{spec.title}{': ' + heading if heading else ''}",
                                    label=f"tab:{spec.name}{'-ext' if heading else ''}").replace("±", r"$\pm$")
                     + "".join(f"% {line}\n" for line in notes.splitlines()))
    failed = tidy[tidy["metric"] == spec.metrics[0]]["failed"].sum()
    footer = [spec.note] if spec.note else []
    if spec.describe is not None:
        sel = _selected(runs, spec)
        footer.append(spec.describe(sel[sel["status"] == "completed"]))
    if failed:
        footer.append(f"Not counted: {failed} failed or interrupted run(s).")
    text = (f"# {spec.title}\n\n{_caption(spec, tidy)} Regenerated by `dfa-bench-tables`; do not edit by hand.\n\n"
            + "\n\n".join(sections) + "\n" + ("\n" + "\n\n".join(footer) + "\n" if footer else ""))
    if spec.groups:
        text += ("\n## Mean over each group's scenes (the paper's Table 1 layout)\n\n"
                 "Published BP NeRF means (Mildenhall et al. 2020, Table 1): synthetic 31.01 dB, LLFF 26.50 dB.\n\n"
                 + group_means(tidy, spec) + "\n")
    files.write_text(out / f"{spec.name}.md", text)
    files.write_text(out / f"{spec.name}.csv", tidy.to_csv(index=False))
    files.write_text(out / f"{spec.name}.tex", "\n".join(latex))
    return out / f"{spec.name}.md"


def write_alignment_table(runs: pd.DataFrame, out: Path) -> Path | None:
    """The angle between each method's updates and true gradients at the end of training, per layer."""
    cols = [c for c in runs.columns if c.startswith("align/param/") and c.endswith("weight")]
    done = runs[is_feedback_method(runs["method"]) & (runs["status"] == "completed")]
    if not cols or done.empty:
        return None
    rows = []
    for (task, dataset, model, variant, method), g in done.groupby(["task", "dataset", "model", "variant", "method"]):
        for col in cols:
            values = g[col].dropna().astype(float)
            if len(values):
                rows.append({"task": task, "dataset": dataset, "model": model_label(model, variant),
                             "method": method, "layer": col.removeprefix("align/param/"),
                             "angle (deg)": f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1
                             else f"{values.mean():.1f}", "n": len(values)})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    header = ("# Alignment at the end of training\n\nAngle in degrees between each weight's update under the method "
              "and its true backprop gradient, on the last measured batch (0 = same direction, 90 = orthogonal); "
              "mean ± std over seeds. Regenerated by `dfa-bench-tables`.\n\n")
    files.write_text(out / "alignment.md", header + table.to_markdown(index=False) + "\n")
    files.write_text(out / "alignment.csv", table.to_csv(index=False))
    files.write_text(out / "alignment.tex", table.to_latex(index=False, caption="Alignment at the end of training",
                                                          label="tab:alignment").replace("±", r"$\pm$"))
    return out / "alignment.md"


def write_all(results: Path, out: Path, figures: Path, page: Path | None) -> list[Path]:
    """Every table, figure (and the results page) from the runs under `results`."""
    runs = read_runs(results)
    if runs.empty:
        return []
    evaluated = evaluated_published_models(results)
    refs = pd.concat([published(), evaluated], ignore_index=True)
    written = [p for spec in TABLES if (p := write_table(spec, runs, out, refs)) is not None]
    written += write_lr_studies(runs, out, figures)  # a study's alignment is drawn there, at each best lr
    runs = runs[runs["protocol"] != LR_STUDY]
    if (p := write_alignment_table(runs, out)) is not None:
        written.append(p)
    if (text := bottleneck_table(runs)) is not None:
        files.write_text(out / "bottleneck.md", "# Bottleneck study (companion paper, arXiv 1906.04554)\n\n"
                         "DFA runs of `experiment=bottleneck*`: mean per-sample cosine between the DFA signal and the "
                         "true gradient at each hidden layer at the end of training, and accuracy (%) at the epoch of "
                         "best validation accuracy (the rule of image.md), mean over seeds. Regenerated by "
                         "`dfa-bench-tables`.\n\n" + text + "\n")
        written.append(out / "bottleneck.md")
    written += all_figures(runs, figures)
    written += nerf_psnr_figures(runs, figures, evaluated)
    keep = {p.resolve() for p in written} | {p.with_suffix(x).resolve() for p in written if p.suffix == ".md"
                                               for x in (".csv", ".tex")}  # each table's csv and tex files
    for folder in (out, figures):  # a table or figure whose runs are gone goes with them
        for path in sorted(folder.glob("*.*")) if folder.is_dir() else []:
            if path.suffix in (".md", ".csv", ".tex", ".png") and path.resolve() not in keep:
                path.unlink()
    if page is not None:
        from dfa_bench.results_page import write_page

        written.append(write_page(page, runs, out, figures))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dfa-bench-tables", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=None,
                        help=f"where runs are (default: {CURATED}, the curated runs of the Makefile's targets)")
    parser.add_argument("--out", type=Path, default=None, help="where tables go (default: results/tables, "
                        "or <results>/tables with --results)")
    parser.add_argument("--figures", type=Path, default=None, help="where figures go (default: results/figures, "
                        "or <results>/figures with --results)")
    parser.add_argument("--check", action="store_true", help="only check that every curated run's config is "
                        "what its Makefile target produces now; exit 1 if not")
    args = parser.parse_args(argv)
    if args.check:
        from dfa_bench.curation import main as check

        return check(args.results or CURATED)
    curated = args.results is None
    results = CURATED if curated else args.results
    base = Path("results") if curated else results
    if not results.is_dir():
        print(f"dfa-bench-tables: no results folder {results}", file=sys.stderr)
        return 2
    written = write_all(results, args.out or base / "tables", args.figures or base / "figures",
                        base / "README.md" if curated else None)
    if not written:
        print(f"dfa-bench-tables: no summary.json under {results}", file=sys.stderr)
        return 2
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
