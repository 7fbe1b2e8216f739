"""The benchmark command runs end to end at a tiny size (no timing assertions)."""
from dfa_bench.bench import main
from tests.conftest import require


def test_bench_smoke(tmp_path, cli_env, monkeypatch):
    require("planetoid", "Cora", "raw")
    require("criteo", "criteo_kaggle_train_head10000.txt")
    for key in ("DFA_BENCH_DATA", "DFA_BENCH_CACHE"):
        monkeypatch.setenv(key, cli_env[key])
    out = tmp_path / "bench"
    assert main(["--case", "cora-gcn", "--case", "criteo-deepfm-b2048", "--steps", "2", "--warmup", "1",
                 "--criteo-rows", "3000", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    md = next(out.glob("*.md")).read_text()
    assert "Machine:" in md and "Date:" in md
    for text in ("cora-gcn", "criteo-deepfm-b2048", "| dfa", "| shallow", "criteo-preprocess"):
        assert text in md
    assert next(out.glob("*.csv")).read_text().startswith("case,")


def test_bench_other_methods_and_profile(tmp_path, cli_env, monkeypatch):
    require("planetoid", "Cora", "raw")
    require("nerf", "nerf_synthetic", "lego")
    for key in ("DFA_BENCH_DATA", "DFA_BENCH_CACHE"):
        monkeypatch.setenv(key, cli_env[key])
    out = tmp_path / "bench"
    assert main(["--case", "cora-gcn", "--case", "nerf-tiny", "--methods", "bp,fa,drtp", "--steps", "2", "--warmup", "1",
                 "--profile", "1", "--out", str(out)]) == 0
    md = next(p for p in out.glob("*.md") if not p.name.endswith("-profile.md")).read_text()
    assert "| fa" in md and "| drtp" in md and "vs bp" in md
    assert "not run: method=drtp needs" in md  # NeRF has no classification error: reported, not fatal
    profile = next(out.glob("*-profile.md")).read_text()
    assert "cora-gcn, fa" in profile and "Self CPU" in profile
    assert main(["--case", "cora-gcn", "--methods", "bp,hebbian", "--out", str(out)]) == 2
