"""`dfa-bench` and `dfa-bench-tables` as a user runs them, in subprocesses."""
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import require

BIN = Path(sys.executable).parent


def _run(args, env, cwd):
    return subprocess.run([str(BIN / args[0]), *args[1:]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_single_run_writes_summary(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    out = tmp_path / "run"
    p = _run(["dfa-bench", "task=gcn", "method=dfa", "task.epochs=3", f"hydra.run.dir={out}"], cli_env, tmp_path)
    assert p.returncode == 0, p.stderr
    s = json.loads((out / "summary.json").read_text())
    assert {k: s[k] for k in ("task", "dataset", "model", "method", "seed", "status")} == {
        "task": "gcn", "dataset": "cora", "model": "gcn", "method": "dfa", "seed": 0, "status": "completed"}
    assert {"test_acc", "val_acc", "train_acc", "best_epoch"} <= set(s["metrics"])
    assert s["wall_s"] > 0 and s["version"]
    assert (out / "config.yaml").exists() and (out / "checkpoint.pt").exists()
    assert "test_acc" in p.stdout + p.stderr

    again = _run(["dfa-bench", "task=gcn", "method=dfa", "task.epochs=3", f"hydra.run.dir={out}"], cli_env, tmp_path)
    assert again.returncode == 0 and "not trained again" in again.stderr + again.stdout
    assert json.loads((out / "summary.json").read_text()) == s


def test_unknown_choice_lists_the_valid_ones(cli_env, tmp_path):
    p = _run(["dfa-bench", "model=resnet"], cli_env, tmp_path)
    assert p.returncode != 0
    assert "Could not find 'model/resnet'" in p.stderr and "gat" in p.stderr and "cheb" in p.stderr


def test_missing_dataset_file_is_one_clear_message(cli_env, tmp_path):
    pubmed = require("planetoid", "PubMed", "raw")
    if (pubmed / "ind.pubmed.allx").exists():
        return  # nothing is missing in this data root
    p = _run(["dfa-bench", "dataset=pubmed", f"hydra.run.dir={tmp_path / 'run'}"], cli_env, tmp_path)
    assert p.returncode == 2
    assert "ind.pubmed.allx missing" in p.stderr + p.stdout
    assert "Traceback" not in p.stderr


def test_sweep_then_table(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    results = tmp_path / "results"
    p = _run(["dfa-bench", "-m", "method=bp,dfa", "task.epochs=3", f"hydra.sweep.dir={results}/sweep"],
             cli_env, tmp_path)
    assert p.returncode == 0, p.stderr
    assert len(list(results.rglob("summary.json"))) == 2
    t = _run(["dfa-bench-tables", "--results", str(results)], cli_env, tmp_path)
    assert t.returncode == 0, t.stderr
    md = (results / "tables" / "graph.md").read_text()
    assert "cora bp" in md and "cora dfa" in md and "(n=1)" in md
    assert "Kipf & Welling 2017" in md
    tex = (results / "tables" / "graph.tex").read_text()
    assert r"\begin{tabular}" in tex
    csv = (results / "tables" / "graph.csv").read_text().splitlines()
    assert csv[0] == "dataset,model,method,metric,mean,std,n,diverged,failed" and len(csv) == 3


def test_wandb_offline_logger(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    out = tmp_path / "run"
    env = {**cli_env, "WANDB_MODE": "offline"}
    p = _run(["dfa-bench", "logger=wandb", "task.epochs=2", f"hydra.run.dir={out}"], env, tmp_path)
    assert p.returncode == 0, p.stderr
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_dataset_of_another_task_is_refused(cli_env, tmp_path):
    out = tmp_path / "run"
    p = _run(["dfa-bench", "task=gcn", "dataset=criteo_sample", f"hydra.run.dir={out}"], cli_env, tmp_path)
    assert p.returncode == 2
    assert "dataset 'criteo_sample' belongs to task 'recsys', not task 'gcn'" in p.stderr + p.stdout
