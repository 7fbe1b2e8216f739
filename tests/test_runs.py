"""Runs that survive: resume after SIGKILL, divergence, bad input, determinism, launchers, several processes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dfa_bench.errors import ConfigError, DataError, RunDirError
from dfa_bench.runner import run
from tests.conftest import require

BIN = Path(sys.executable).parent
GCN = ["task=gcn", "model=gcn", "method=dfa", "threads=1", "alignment.every=7"]


def _cli(args, env, cwd, **kw):
    return subprocess.run([str(BIN / "dfa-bench"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600, **kw)


def _epochs_logged(path: Path) -> int:
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return 0
    return max((r.get("epoch", 0) for r in rows if "val_acc" in r), default=0)


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    args = [*GCN, "task.epochs=300", "checkpoint_every=20"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([str(BIN / "dfa-bench"), *args, f"hydra.run.dir={killed}"], env=cli_env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _epochs_logged(killed / "metrics.jsonl") < 130 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists() and (killed / "checkpoint.pt").exists()

    resumed = _cli([*args, f"hydra.run.dir={killed}"], cli_env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr + resumed.stdout
    whole = tmp_path / "whole"
    assert _cli([*args, f"hydra.run.dir={whole}"], cli_env, tmp_path).returncode == 0
    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((whole / "summary.json").read_text())
    assert a["resumed_from_epoch"] >= 120
    assert a["metrics"] == b["metrics"] and a["alignment"] == b["alignment"]
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "val_acc" in r] == list(range(1, 301))  # no duplicated epochs
    state_a = torch.load(killed / "checkpoint.pt", weights_only=False)["model"]
    state_b = torch.load(whole / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_b)


def test_same_seed_same_metrics(make_cfg, tmp_path):
    require("planetoid", "Cora", "raw")
    a = run(make_cfg(*GCN, "task.epochs=15"), tmp_path / "a")
    b = run(make_cfg(*GCN, "task.epochs=15"), tmp_path / "b")
    c = run(make_cfg(*GCN, "task.epochs=15", "seed=1"), tmp_path / "c")
    assert a["metrics"] == b["metrics"] and a["alignment"] == b["alignment"]
    assert a["metrics"] != c["metrics"]


def test_resume_with_another_config_is_refused(make_cfg, tmp_path):
    require("planetoid", "Cora", "raw")
    run(make_cfg(*GCN, "task.epochs=4", "checkpoint_every=2"), tmp_path)
    (tmp_path / "summary.json").unlink()  # as if killed after its last checkpoint
    with pytest.raises(RunDirError, match="another config .*model.settings.dfa.lr"):
        run(make_cfg(*GCN, "task.epochs=4", "model.settings.dfa.lr=0.5"), tmp_path)


def test_finished_run_with_another_config_is_refused(make_cfg, tmp_path):
    require("planetoid", "Cora", "raw")
    run(make_cfg(*GCN, "task.epochs=2"), tmp_path)
    with pytest.raises(RunDirError, match="another config .*task.epochs"):
        run(make_cfg(*GCN, "task.epochs=3"), tmp_path)


def test_corrupt_checkpoint_is_one_clear_message(make_cfg, tmp_path):
    require("planetoid", "Cora", "raw")
    run(make_cfg(*GCN, "task.epochs=2"), tmp_path)
    (tmp_path / "summary.json").unlink()
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(DataError, match="checkpoint.pt is unreadable.*resume=false"):
        run(make_cfg(*GCN, "task.epochs=2"), tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"truncated"  # left for inspection


def test_divergence_stops_with_status_and_message(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    out = tmp_path / "run"
    p = _cli([*GCN, "task.epochs=30", "model.settings.dfa.lr=1e30", f"hydra.run.dir={out}"], cli_env, tmp_path)
    assert p.returncode == 1
    assert "run diverged: training loss is nan" in p.stderr + p.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "diverged" and "nan" in s["error"]


def test_a_diverged_run_does_not_stop_the_sweep_and_is_tabled(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    results = tmp_path / "results"
    p = _cli(["-m", "task.epochs=20", "threads=1", "method=dfa,bp", "model.settings.dfa.lr=1e30",
              f"hydra.sweep.dir={results}/s", "hydra.launcher.n_jobs=1"], cli_env, tmp_path)
    assert p.returncode == 1, p.stderr  # a sweep with a run that did not complete
    assert "dfa-bench sweep: diverged" in p.stderr and "dfa-bench sweep: 1 of 2 runs completed" in p.stderr
    statuses = sorted(json.loads(f.read_text())["status"] for f in results.rglob("summary.json"))
    assert statuses == ["completed", "diverged"]
    t = subprocess.run([str(BIN / "dfa-bench-tables"), "--results", str(results)], capture_output=True, text=True)
    assert t.returncode == 0
    assert "– [1 diverged]" in (results / "tables" / "graph.md").read_text()


@pytest.mark.parametrize("override,key", [("seed=abc", "seed"), ("alignment.every=-1", "alignment.every"),
                                          ("resume=maybe", "resume")])
def test_wrong_types_name_the_key(make_cfg, tmp_path, override, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        run(make_cfg(override), tmp_path)
    assert not (tmp_path / "summary.json").exists()


def test_truncated_nerf_files_are_clear_errors(tmp_path):
    from dfa_bench.data.nerf import load_blender, load_llff

    fern = require("nerf", "nerf_llff_data", "fern")
    broken = tmp_path / "fern"
    shutil.copytree(fern, broken)
    raw = (broken / "poses_bounds.npy").read_bytes()
    (broken / "poses_bounds.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="poses_bounds.npy: unreadable"):
        load_llff(broken)
    lego = require("nerf", "nerf_synthetic", "lego")
    scene = tmp_path / "lego"
    scene.mkdir()
    for name in ("transforms_train.json", "transforms_val.json", "transforms_test.json"):
        shutil.copy(lego / name, scene / name)
    for split in ("train", "val", "test"):
        shutil.copytree(lego / split, scene / split)
    png = scene / "train" / "r_0.png"
    png.write_bytes(png.read_bytes()[:200])
    with pytest.raises(DataError, match="r_0.png: unreadable image"):
        load_blender(scene, downscale=40)


def test_submitit_local_launcher_runs_a_sweep(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    sweep = tmp_path / "sweep"
    p = _cli(["-m", "hydra/launcher=submitit_local", "method=bp,dfa", "task.epochs=2", "threads=1",
              f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=10"], cli_env, tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(json.loads(f.read_text())["method"] for f in sweep.rglob("summary.json")) == ["bp", "dfa"]


def test_two_processes_equal_one_on_the_global_batch(cli_env, tmp_path):
    """torchrun, gloo, 2 processes: each trains on half the labelled nodes; gradients are averaged."""
    require("planetoid", "Cora", "raw")
    args = ["task=gcn", "model=cheb", "method=dfa", "task.epochs=4", "alignment.every=3", "threads=1"]
    two = tmp_path / "two"
    p = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "dfa_bench.cli", *args,
                        f"hydra.run.dir={two}"], env=cli_env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    one = tmp_path / "one"
    assert _cli([*args, f"hydra.run.dir={one}"], cli_env, tmp_path).returncode == 0
    a = torch.load(two / "checkpoint.pt", weights_only=False)
    b = torch.load(one / "checkpoint.pt", weights_only=False)
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    for key in b["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    fa, fb = a["method"]["projection"]["matrices"], b["method"]["projection"]["matrices"]
    assert all(torch.equal(fa[k]["matrix"], fb[k]["matrix"]) for k in fb)
