"""The table builder on hand-made run folders: identity grouping, layout, what counts as a seed."""
import re
from pathlib import Path

import yaml

from dfa_bench.files import write_json
from dfa_bench.tables import TABLES, aggregate, read_runs, write_alignment_table, write_table

GRAPH = TABLES[0]


def _run(path: Path, seed: int, method: str, value, status="completed", finished="2026-01-01T00:00:00",
         task="gcn", dataset="cora", model="gcn", metrics=None, lr=0.01, **extra):
    """A run folder: config.yaml (what makes its identity) and summary.json."""
    config = {"task": {"name": task}, "dataset": {"name": dataset}, "model": {"name": model, "settings": {
        method: {"lr": lr}}}, "method": {"name": method}, "seed": seed, "data_root": str(path)}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    write_json(path / "summary.json", {
        "task": task, "dataset": dataset, "model": model, "method": method, "seed": seed, "status": status,
        "finished": finished, "metrics": (metrics or {"test_acc": value}) if status == "completed" else {}, **extra})


def _rows(md: str) -> dict[tuple[str, str], list[str]]:
    """(model, method) -> the cells of the first markdown table."""
    rows = {}
    for line in md.split("## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and not set(cells[0]) <= set(":-") and cells[0] != "model":
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_cells_count_completed_seeds_only(tmp_path):
    for seed, acc in enumerate([0.80, 0.82, 0.84]):
        _run(tmp_path / f"bp{seed}", seed, "bp", acc)
    _run(tmp_path / "dfa0", 0, "dfa", 0.7)
    _run(tmp_path / "dfa1", 1, "dfa", None, status="diverged")
    _run(tmp_path / "dfa2", 2, "dfa", None, status="failed")
    _run(tmp_path / "dfa3", 3, "dfa", None, status="interrupted")
    _run(tmp_path / "bp0-again", 0, "bp", 0.90, finished="2026-02-01T00:00:00")  # a later run of a (config, seed)
    _run(tmp_path / "bp3" / "replaced-2026-01-01_00-00-00", 3, "bp", 0.10)  # moved aside by resume=false
    runs = read_runs(tmp_path)
    tidy = aggregate(runs, GRAPH).set_index("method")
    assert tidy.loc["bp", "n"] == 3 and abs(tidy.loc["bp", "mean"] - 100 * (0.90 + 0.82 + 0.84) / 3) < 1e-9
    assert tidy.loc["dfa", "n"] == 1 and tidy.loc["dfa", "diverged"] == 1 and tidy.loc["dfa", "failed"] == 2
    md = write_table(GRAPH, runs, tmp_path / "tables").read_text()
    rows = _rows(md)
    assert rows[("gcn", "bp")][0] == "85.3 ± 4.2"  # the usual n (3) is in the caption, not in the cell
    assert rows[("gcn", "dfa")][0] == "70.0 (n=1) [1 diverged]"
    assert "mean ± std over 3 seeds" in md and "Not counted: 2 failed or interrupted run(s)." in md


def test_layout_paper_order_published_rows_beneath_and_extensions(tmp_path):
    for dataset in ("citeseer", "cora"):
        for method in ("shallow", "bp", "dfa", "fa"):
            for seed in range(2):
                _run(tmp_path / f"{dataset}-{method}-{seed}", seed, method, 0.5 + seed / 10, dataset=dataset)
    md = write_table(GRAPH, read_runs(tmp_path), tmp_path / "tables").read_text()
    main, extensions = md.split("## Extensions: other training methods")
    header = next(line for line in main.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["model", "method", "Cora", "CiteSeer", "PubMed"]
    rows = list(_rows(main))
    assert rows[:3] == [("gcn", "bp"), ("gcn", "dfa"), ("gcn", "shallow")]  # ours first, BP DFA shallow
    assert all("published" in method for _, method in rows[3:]) and ("gcn", "bp, published [1]") in rows
    assert _rows(main)[("gcn", "bp, published [1]")] == ["81.5", "70.3", "79.0"]
    assert "| gcn     | fa " in extensions and "| gcn     | bp " not in extensions


def test_runs_of_different_configs_never_share_a_cell(tmp_path):
    for seed in range(2):
        _run(tmp_path / f"a{seed}", seed, "dfa", 0.70, lr=0.01)
        _run(tmp_path / f"b{seed}", seed, "dfa", 0.50, lr=0.001)
    rows = _rows(write_table(GRAPH, read_runs(tmp_path), tmp_path / "tables").read_text())
    assert rows[("gcn (dfa.lr=0.01)", "dfa")][0] == "70.0 ± 0.0"
    assert rows[("gcn (dfa.lr=0.001)", "dfa")][0] == "50.0 ± 0.0"


def test_regenerating_unchanged_runs_gives_the_same_files(tmp_path):
    for seed in range(2):
        _run(tmp_path / f"r{seed}", seed, "bp", 0.8 + seed / 100)
    first = write_table(GRAPH, read_runs(tmp_path), tmp_path / "tables").read_text()
    second = write_table(GRAPH, read_runs(tmp_path), tmp_path / "tables").read_text()
    assert first == second and not re.search(r"\d{4}-\d{2}-\d{2}", first)  # no date in the table


def test_recsys_sample_cells_are_marked_not_comparable(tmp_path):
    for seed in range(2):
        _run(tmp_path / f"r{seed}", seed, "dfa", None, task="recsys", dataset="criteo_sample", model="deepfm",
             metrics={"test_auc": 0.7 + seed / 100, "test_logloss": 0.5})
    spec = next(t for t in TABLES if t.name == "recsys")
    md = write_table(spec, read_runs(tmp_path), tmp_path / "tables").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "Criteo auc" in header and "Criteo 10k-row sample† auc" in header
    assert "† Not comparable with the published full-Criteo values" in md
    assert _rows(md)[("deepfm", "dfa")][2] == "0.7050 ± 0.0071"
    assert _rows(md)[("deepfm", "dfa, published [1]")][0] == "0.7956"


def test_lm_lower_bound_is_shown_as_such(tmp_path):
    _run(tmp_path / "r", 0, "shallow", None, task="lm", dataset="wikitext2", model="transformer",
         metrics={"val_ppl": 120.0, "test_ppl": 115.0})
    spec = next(t for t in TABLES if t.name == "lm")
    md = write_table(spec, read_runs(tmp_path), tmp_path / "tables").read_text()
    published = _rows(md)[("transformer (schedule lr=0.0001 b2=0.999)", "shallow, published [1]")]
    assert published[0] == ">400.0"


def test_nerf_table_has_per_scene_and_group_means(tmp_path):
    for scene, value in (("lego", 20.0), ("fern", 18.0)):
        _run(tmp_path / scene, 0, "dfa", None, task="nerf", dataset=scene, model="nerf",
             metrics={"test_psnr": value, "test_ssim": 0.5})
    spec = next(t for t in TABLES if t.name == "nerf")
    md = write_table(spec, read_runs(tmp_path), tmp_path / "tables").read_text()
    assert "no model selection" in md
    assert _rows(md)[("nerf", "dfa")][:2] == ["20.00", "0.50"]
    assert _rows(md)[("nerf", "bp, published [1]")][0] == "32.54"
    assert "20.00 (1/8 scenes)" in md and "18.00 (1/8 scenes)" in md
    assert "nerf on fern 1/1, lego 1/1." in md  # no dataset.downscale: full size


def test_nerf_table_states_each_scale_and_the_published_models_evaluated_at_each_size(tmp_path):
    """A reader sees at which image scale our rows and each evaluation of a published model were made; a
    whole-image evaluation has no sampling error and gives SSIM too."""
    from dfa_bench.tables import evaluated_published_models

    for method, value in (("bp", 21.0), ("dfa", 15.0)):
        path = tmp_path / "runs" / method
        _run(path, 0, method, None, task="nerf", dataset="lego", model="nerf_as_run",
             metrics={"test_psnr": value, "test_ssim": 0.7})
        config = yaml.safe_load((path / "config.yaml").read_text())
        config["dataset"]["downscale"] = 8
        (path / "config.yaml").write_text(yaml.safe_dump(config))
    common = {"kind": "published", "scene": "lego", "model": "nerf_as_run", "views": 25,
              "checkpoint": "/data/nerf/pretrained_dfa/synth_lego_dfa.ckpt"}
    write_json(tmp_path / "published" / "eval-a.json", {**common, "psnr": 22.17, "psnr_se": 0.13, "eval_pixels": 1000,
                                                        "pixels_per_view": 1000, "image_size": [800, 800]})
    write_json(tmp_path / "published" / "eval-b.json", {**common, "psnr": 23.5, "psnr_se": 0.0, "eval_pixels": None,
                                                        "pixels_per_view": 10000, "image_size": [100, 100],
                                                        "ssim": 0.81})
    evaluated = evaluated_published_models(tmp_path / "published")
    assert sorted(evaluated["metric"]) == ["test_psnr", "test_psnr", "test_ssim"]
    assert sorted(evaluated["image_size"].unique()) == ["100 × 100", "800 × 800"]
    spec = next(t for t in TABLES if t.name == "nerf")
    md = write_table(spec, read_runs(tmp_path / "runs"), tmp_path / "tables", refs=evaluated).read_text()
    rows = _rows(md)
    assert rows[("nerf_as_run", "bp")][:2] == ["21.00", "0.70"]
    assert rows[("nerf_as_run", "dfa, published [1]")][:2] == ["22.17 ± 0.13", "–"]
    assert rows[("nerf_as_run", "dfa, published [2]")][:2] == ["23.50", "0.81"]  # whole images: no ±, SSIM
    assert "on all pixels of 25 test views at 100 × 100" in md
    assert "on 1000 seeded pixels of each of 25 test views at 800 × 800; ± is the pixel-sampling" in md
    assert "nerf_as_run on lego 1/8." in md


def test_alignment_table_from_dfa_runs(tmp_path):
    for seed, angle in enumerate([40.0, 44.0]):
        _run(tmp_path / f"r{seed}", seed, "dfa", 0.8,
             alignment={"align/param/conv1.lin.weight": angle, "align/param/conv1.bias": 3.0})
    md = write_alignment_table(read_runs(tmp_path), tmp_path / "tables").read_text()
    assert "| gcn    | cora      | gcn     | dfa      | conv1.lin.weight | 42.0 ± 2.8    |   2 |" in md
    assert "conv1.bias" not in md


def test_outputs_whose_runs_are_gone_are_removed(tmp_path):
    from dfa_bench.tables import write_all

    runs, out, figures = tmp_path / "runs", tmp_path / "tables", tmp_path / "figures"
    _run(runs / "a", 0, "bp", 0.8)
    figures.mkdir(parents=True)
    (figures / "alignment-gone.png").write_bytes(b"")
    out.mkdir()
    (out / "lm.md").write_text("a table of runs that are gone")
    write_all(runs, out, figures, page=None)
    assert sorted(p.name for p in out.iterdir()) == ["graph.csv", "graph.md", "graph.tex"]
    assert not (figures / "alignment-gone.png").exists()


def test_another_protocol_gets_its_own_table(tmp_path):
    """Runs on DFA-GNN's random 60/20/20 split (task.split) and its published rows go to dfagnn.md, with
    dfa_gnn in the main table; Table 3 keeps the public-split runs. The recommender's split fractions are
    not a protocol."""
    dfagnn = next(spec for spec in TABLES if spec.name == "dfagnn")
    for method in ("bp", "dfa_gnn"):
        for seed in range(2):
            path = tmp_path / f"60-{method}-{seed}"
            _run(path, seed, method, 0.8 + seed / 100, model="gcn3")
            config = yaml.safe_load((path / "config.yaml").read_text())
            config["task"]["split"] = "random_60_20_20"
            (path / "config.yaml").write_text(yaml.safe_dump(config))
    _run(tmp_path / "public-bp", 0, "bp", 0.7)
    runs = read_runs(tmp_path)
    graph = _rows(write_table(GRAPH, runs, tmp_path / "tables").read_text())
    assert ("gcn", "bp") in graph and not any(model == "gcn3" for model, _ in graph)
    rows = _rows(write_table(dfagnn, runs, tmp_path / "tables").read_text())
    assert rows[("gcn3", "bp")][0] == "80.5 ± 0.7" and rows[("gcn3", "dfa_gnn")][0] == "80.5 ± 0.7"
    assert rows[("gcn3", "dfa_gnn, published [2]")][0] == "87.7 ± 1.6"  # their Table 1, in the main table
    recsys = tmp_path / "recsys"
    _run(recsys, 0, "bp", None, task="recsys", dataset="criteo_sample", model="deepfm",
         metrics={"test_auc": 0.7, "test_logloss": 0.5})
    config = yaml.safe_load((recsys / "config.yaml").read_text())
    config["task"]["split"] = [0.8, 0.1, 0.1]
    (recsys / "config.yaml").write_text(yaml.safe_dump(config))
    assert read_runs(tmp_path).set_index("task").loc["recsys", "protocol"] == ""


def test_nerf_psnr_figure_per_scene_with_the_published_reference(tmp_path):
    import pandas as pd

    from dfa_bench.figures import nerf_psnr_figures

    for method, psnr in (("bp", 22.0), ("dfa", 20.0)):
        path = tmp_path / method
        _run(path, 0, method, None, task="nerf", dataset="lego", model="nerf_tiny", metrics={"test_psnr": psnr})
        (path / "metrics.jsonl").write_text("".join(
            f'{{"step": {s}, "val_psnr": {psnr - 4 + s / 500}}}\n' for s in (500, 1000, 1500, 2000)))
    ref = pd.DataFrame([{"dataset": "lego", "method": "dfa", "value": 22.17, "metric": "test_psnr",
                         "image_size": "800 × 800"},
                        {"dataset": "lego", "method": "dfa", "value": 0.8, "metric": "test_ssim",
                         "image_size": "800 × 800"}])
    written = nerf_psnr_figures(read_runs(tmp_path), tmp_path / "figures", ref)
    assert [p.name for p in written] == ["nerf-psnr-lego-nerf_tiny.png"] and written[0].stat().st_size > 0
