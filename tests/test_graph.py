"""The graph task end to end on the real Planetoid data, through the runner."""
import json
import math

import pytest
import torch

from dfa_bench.errors import DataError
from dfa_bench.runner import run
from dfa_bench.tasks.graph import load_planetoid, planetoid_raw_files
from tests.conftest import data_root, require


def test_cora_public_split(cache_root):
    require("planetoid", "Cora", "raw")
    data, classes = load_planetoid("Cora", data_root(), cache_root)
    assert (data.num_nodes, data.num_features, classes) == (2708, 1433, 7)
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [140, 500, 1000]
    assert torch.allclose(data.x.sum(1)[data.x.sum(1) > 0], torch.ones(1))  # NormalizeFeatures


def test_incomplete_planetoid_names_the_missing_file(tmp_path, cache_root):
    raw = tmp_path / "planetoid" / "PubMed" / "raw"
    raw.mkdir(parents=True)
    for name in planetoid_raw_files("PubMed"):
        if not name.endswith(".allx"):
            (raw / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"ind\.pubmed\.allx missing from .*PubMed/raw.*kimiyoung/planetoid"):
        load_planetoid("PubMed", tmp_path, cache_root)


def test_corrupt_raw_file_is_a_clear_error(tmp_path, cache_root):
    raw = tmp_path / "planetoid" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for name in planetoid_raw_files("Cora"):
        (raw / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="could not read the raw files"):
        load_planetoid("Cora", tmp_path, tmp_path / "cache")


def test_pubmed_when_present(cache_root):
    raw = require("planetoid", "PubMed", "raw")
    if not (raw / "ind.pubmed.allx").exists():
        pytest.skip("PubMed's ind.pubmed.allx is absent from the data root")
    data, classes = load_planetoid("PubMed", data_root(), cache_root)
    assert (data.num_nodes, classes) == (19717, 3)


@pytest.mark.parametrize("model", ["gcn", "cheb", "gat"])
@pytest.mark.parametrize("method", ["bp", "dfa", "shallow"])
def test_each_model_and_method_runs(make_cfg, tmp_path, model, method):
    require("planetoid", "Cora", "raw")
    cfg = make_cfg(f"model={model}", f"method={method}", "task.epochs=3", "alignment.every=2")
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed"
    assert 0.0 <= summary["metrics"]["test_acc"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "val_acc" in r] == [1, 2, 3]
    aligned = [r for r in rows if any(k.startswith("align/") for k in r)]
    if method == "dfa":  # measured at steps 0 and 2
        assert len(aligned) == 2
        angles = [v for r in aligned for k, v in r.items() if k.startswith("align/param/")]
        assert angles and all(0.0 <= a <= 180.0 for a in angles)
        assert "align/point/hidden" in aligned[0]
        assert (tmp_path / "alignment.png").stat().st_size > 10_000
    else:
        assert not aligned and not (tmp_path / "alignment.png").exists()


def test_dna_model_runs(make_cfg, tmp_path):
    require("planetoid", "Cora", "raw")
    cfg = make_cfg("model=dna", "method=dfa", "task.epochs=1", "alignment.every=0", "model.layers=2")
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed"
    assert summary["metrics"]["test_acc"] > 0


def test_dfa_learns_hidden_features_beyond_shallow(make_cfg, tmp_path):
    """On Cora, a GCN trained by DFA beats the shallow baseline clearly (paper claim 3)."""
    require("planetoid", "Cora", "raw")
    acc = {}
    for method in ("dfa", "shallow"):
        cfg = make_cfg(f"method={method}", "task.epochs=60", "alignment.every=0")
        acc[method] = run(cfg, tmp_path / method)["metrics"]["test_acc"]
    assert acc["dfa"] > 0.65
    assert acc["dfa"] > acc["shallow"] + 0.15


def test_dfa_alignment_angles_are_below_90_after_training(make_cfg, tmp_path):
    require("planetoid", "Cora", "raw")
    cfg = make_cfg("method=dfa", "task.epochs=40", "alignment.every=39")
    summary = run(cfg, tmp_path)
    angle = summary["alignment"]["align/param/conv1.lin.weight"]
    assert not math.isnan(angle) and angle < 90.0


def test_finished_run_is_not_trained_again_and_resume_false_keeps_it(make_cfg, tmp_path):
    require("planetoid", "Cora", "raw")
    cfg = make_cfg("task.epochs=1")
    first = run(cfg, tmp_path)
    before = (tmp_path / "summary.json").read_bytes()
    assert run(cfg, tmp_path) == first
    assert (tmp_path / "summary.json").read_bytes() == before
    run(make_cfg("task.epochs=2", "resume=false"), tmp_path)
    kept = list(tmp_path.glob("replaced-*/summary.json"))
    assert len(kept) == 1 and kept[0].read_bytes() == before


def test_unusable_data_root_fails_with_summary(make_cfg, tmp_path):
    not_a_folder = tmp_path / "data-root"
    not_a_folder.write_text("a file, not a folder")
    cfg = make_cfg("task.epochs=1", f"data_root={not_a_folder}")
    with pytest.raises(DataError, match="Cora: no raw files at .*data-root"):
        run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_tsne_of_the_hidden_layer_per_method_and_side_by_side(make_cfg, tmp_path):
    from dfa_bench.tables import main as tables_main

    require("planetoid", "Cora", "raw")
    for method in ("bp", "dfa"):
        run(make_cfg(f"method={method}", "task.epochs=2", "task.tsne=true", "alignment.every=0"), tmp_path / method)
        assert (tmp_path / method / "tsne.png").stat().st_size > 10_000
    assert tables_main(["--results", str(tmp_path)]) == 0
    assert (tmp_path / "figures" / "tsne-cora-gcn.png").stat().st_size > 20_000


def test_graph_autoencoder_learns_links_on_cora(make_cfg, tmp_path):
    require("planetoid", "Cora", "raw")
    summary = run(make_cfg("task=gae", "method=dfa", "task.epochs=60", "alignment.every=20"), tmp_path)
    assert summary["metrics"]["test_auc"] > 0.75 and summary["metrics"]["test_ap"] > 0.7
    assert "align/point/encoder.hidden" in summary["alignment"]
