"""The table builder on hand-made summaries: aggregation, deduplication, diverged runs."""

from dfa_bench.files import write_json
from dfa_bench.tables import TABLES, aggregate, read_runs, write_table


def _summary(path, seed, method, acc, status="completed", finished="2026-01-01T00:00:00"):
    write_json(path / "summary.json", {
        "task": "gcn", "dataset": "cora", "model": "gcn", "method": method, "seed": seed, "status": status,
        "finished": finished, "metrics": {"test_acc": acc} if status == "completed" else {}})


def test_mean_std_count_and_diverged(tmp_path):
    for seed, acc in enumerate([0.80, 0.82, 0.84]):
        _summary(tmp_path / f"bp{seed}", seed, "bp", acc)
    _summary(tmp_path / "dfa0", 0, "dfa", 0.7)
    _summary(tmp_path / "dfa1", 1, "dfa", None, status="diverged")
    # the same configuration and seed run again later: the later one counts
    _summary(tmp_path / "bp0-again", 0, "bp", 0.90, finished="2026-02-01T00:00:00")
    # a run moved aside by resume=false is not read
    _summary(tmp_path / "bp3" / "replaced-2026-01-01_00-00-00", 3, "bp", 0.10)
    runs = read_runs(tmp_path)
    tidy = aggregate(runs, TABLES[0]).set_index("method")
    assert set(tidy["metric"]) == {"test_acc"}
    assert tidy.loc["bp", "n"] == 3
    assert abs(tidy.loc["bp", "mean"] - 100 * (0.90 + 0.82 + 0.84) / 3) < 1e-9
    assert tidy.loc["dfa", "n"] == 1 and tidy.loc["dfa", "diverged"] == 1
    md = write_table(TABLES[0], runs, tmp_path / "tables").read_text()
    assert "85.3 ± 4.2 (n=3)" in md
    assert "70.0 (n=1) [1 diverged]" in md
    assert "81.5 [1]" in md  # Kipf & Welling's published value beside ours


def test_two_metric_table_with_published_values_of_another_dataset(tmp_path):
    for seed in range(2):
        write_json(tmp_path / f"r{seed}" / "summary.json", {
            "task": "recsys", "dataset": "criteo_sample", "model": "deepfm", "method": "dfa", "seed": seed,
            "status": "completed", "finished": "x", "metrics": {"test_auc": 0.7 + seed / 100, "test_logloss": 0.5}})
    spec = next(t for t in TABLES if t.name == "recsys")
    md = write_table(spec, read_runs(tmp_path), tmp_path / "tables").read_text()
    assert "criteo_sample dfa auc" in md and "criteo_sample dfa logloss" in md
    assert "0.7050 ± 0.0071 (n=2)" in md
    assert "criteo dfa auc (published)" in md and "0.7956 [1]" in md


def test_nerf_table_has_per_scene_and_group_means(tmp_path):
    for scene, value in (("lego", 20.0), ("fern", 18.0)):
        write_json(tmp_path / scene / "summary.json", {
            "task": "nerf", "dataset": scene, "model": "nerf", "method": "dfa", "seed": 0, "status": "completed",
            "finished": "x", "metrics": {"test_psnr": value, "test_ssim": 0.5}})
    spec = next(t for t in TABLES if t.name == "nerf")
    md = write_table(spec, read_runs(tmp_path), tmp_path / "tables").read_text()
    assert "lego dfa psnr" in md and "20.00 (n=1)" in md
    assert "lego bp psnr (published)" in md and "32.54 [1]" in md
    assert "20.00 (1/8 scenes)" in md and "18.00 (1/8 scenes)" in md


def test_alignment_table_from_dfa_runs(tmp_path):
    from dfa_bench.tables import write_alignment_table

    for seed, angle in enumerate([40.0, 44.0]):
        write_json(tmp_path / f"r{seed}" / "summary.json", {
            "task": "gcn", "dataset": "cora", "model": "gcn", "method": "dfa", "seed": seed, "status": "completed",
            "finished": "x", "metrics": {"test_acc": 0.8},
            "alignment": {"align/param/conv1.lin.weight": angle, "align/param/conv1.bias": 3.0}})
    md = write_alignment_table(read_runs(tmp_path), tmp_path / "tables").read_text()
    assert "| gcn    | cora      | gcn     | dfa      | conv1.lin.weight | 42.0 ± 2.8    |   2 |" in md
    assert "conv1.bias" not in md
