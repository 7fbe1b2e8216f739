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
    """PubMed without ind.pubmed.allx (as in ../shared/data): one message naming the file and its URL.

    The data root is a copy of the real PubMed folder (links) without that file, so the test asserts
    whether or not the real data root has it.
    """
    pubmed = require("planetoid", "PubMed", "raw")
    raw = tmp_path / "data" / "planetoid" / "PubMed" / "raw"
    raw.mkdir(parents=True)
    for f in pubmed.iterdir():
        if f.name != "ind.pubmed.allx":
            (raw / f.name).symlink_to(f.resolve())
    env = {**cli_env, "DFA_BENCH_DATA": str(tmp_path / "data")}
    p = _run(["dfa-bench", "dataset=pubmed", f"hydra.run.dir={tmp_path / 'run'}"], env, tmp_path)
    out = p.stderr + p.stdout
    assert p.returncode == 2, out
    assert "ind.pubmed.allx missing" in out
    assert "https://github.com/kimiyoung/planetoid/raw/master/data/ind.pubmed.allx" in out
    assert "ind.pubmed.x " not in out and "ind.pubmed.graph missing" not in out  # only the absent file is named
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
    assert md.splitlines()[4].replace(" ", "").startswith("|model|method|Cora|")  # datasets as columns
    rows = {tuple(c.strip() for c in line.split("|")[1:3]) for line in md.splitlines() if line.startswith("| gcn")}
    assert ("gcn", "bp") in rows and ("gcn", "dfa") in rows and ("gcn", "bp, published [1]") in rows
    assert "mean ± std over 1 seed" in md and "Kipf & Welling 2017" in md
    tex = (results / "tables" / "graph.tex").read_text()
    assert r"\begin{tabular}" in tex
    csv = (results / "tables" / "graph.csv").read_text().splitlines()
    assert csv[0] == "dataset,model,variant,method,metric,mean,std,n,diverged,failed,config_id" and len(csv) == 3


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
