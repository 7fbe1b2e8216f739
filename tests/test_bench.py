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


def test_bench_widths_and_case_methods(tmp_path, cli_env, monkeypatch):
    """--widths times a case at each model width and draws the ratios; a case can bring its own methods
    (DFA-GNN's protocol times bp, dfa, dfa_gnn and shallow)."""
    require("planetoid", "Cora", "raw")
    require("nerf", "nerf_synthetic", "lego")
    for key in ("DFA_BENCH_DATA", "DFA_BENCH_CACHE"):
        monkeypatch.setenv(key, cli_env[key])
    out = tmp_path / "bench"
    assert main(["--case", "nerf-tiny", "--widths", "16,32", "--steps", "1", "--warmup", "0", "--out", str(out)]) == 0
    import pandas as pd

    table = pd.read_csv(next(out.glob("*.csv")))
    assert sorted(table["width"].unique()) == [16, 32] and set(table["method"]) == {"bp", "dfa", "shallow"}
    assert next(out.glob("*-width.png")).stat().st_size > 0
    assert main(["--case", "cora-gcn", "--widths", "16", "--out", str(tmp_path / "refused")]) == 2
    assert main(["--case", "nerf-tiny", "--widths", "wide", "--out", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "dfagnn"
    assert main(["--case", "dfagnn-cora", "--steps", "1", "--warmup", "0", "--out", str(out)]) == 0
    assert set(pd.read_csv(next(out.glob("*.csv")))["method"]) == {"bp", "dfa", "dfa_gnn", "shallow"}


def test_keep_freed_memory_can_be_switched_off():
    """The allocator setting is on by default on Linux/glibc and off with DFA_BENCH_MALLOC=system."""
    import os
    import subprocess
    import sys

    code = "from dfa_bench import session; print(session.keep_freed_memory())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                        env={**os.environ, "DFA_BENCH_MALLOC": ""}).stdout.strip()
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "DFA_BENCH_MALLOC": "system"}).stdout.strip()
    assert off == "False"
    import platform

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert on == ("True" if glibc else "False")
