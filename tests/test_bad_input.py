"""Bad input through `dfa-bench` itself: one clear line, exit code 2, and nothing left behind.

Every case runs the command's entry point (`dfa_bench.cli.main`) in a fresh working folder, so that
"nothing left behind" is checked where the run would have written (outputs/ there) and on the data root.
Config errors run it in this process (they stop before any data is read, in well under a second); the
cases that need a real process (a data root, a sweep's workers, Ctrl-C) run the installed `dfa-bench`.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require

BIN = Path(sys.executable).parent


def _run(args, env, cwd, timeout=300):
    return subprocess.run([str(BIN / "dfa-bench"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _in_process(args, cli_env, cwd, monkeypatch, capfd) -> tuple[int, str]:
    """`dfa-bench ARGS` through the entry point in this process: (exit code, everything printed)."""
    from hydra.core.global_hydra import GlobalHydra

    from dfa_bench import cli

    for key, value in cli_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["dfa-bench", *args])
    monkeypatch.setattr(cli, "_job_started", False)
    GlobalHydra.instance().clear()
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out = capfd.readouterr()
    return exit_.value.code, out.out + out.err


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if "ERROR" in line or line.startswith("dfa-bench")]


@pytest.mark.parametrize("override,message", [
    ("task.epochs=-5", "task.epochs=-5: expected an integer >= 1"),
    ("task.epochs=0", "task.epochs=0: expected an integer >= 1"),
    ("task.epochs=1.5", "task.epochs=1.5: expected an integer (the config has 250)"),
    ("task.epochs=abc", "task.epochs='abc': expected an integer"),
    ("+model.settings.dfa.droput=0.5", "model.settings.dfa.droput: unknown key; the keys of model.settings.dfa are: "
                                       "dropout, lr, weight_decay"),
    ("model.settings.dfa.lr=-0.1", "model.settings.dfa.lr=-0.1: expected a number > 0"),
    ("model.settings.dfa.dropout=1.5", "model.settings.dfa.dropout=1.5: expected a number in [0, 1)"),
    ("task=lm task.precision=fp8", "task.precision='fp8': expected one of auto, bf16, tf32, fp32"),
    ("method.feedback.layout=diagonal", "method.feedback.layout='diagonal': expected one of shared, independent"),
    ("dataset=wikitext2", "dataset 'wikitext2' belongs to task 'lm', not task 'gcn'"),
])
def test_config_error_is_one_line_exit_2_and_no_folder(cli_env, tmp_path, monkeypatch, capfd, override, message):
    code, text = _in_process(["task=gcn", *override.split()], cli_env, tmp_path, monkeypatch, capfd)
    assert code == 2, text
    errors = _errors(text)
    assert len(errors) == 1 and message in errors[0], errors
    assert "Traceback" not in text
    assert not (tmp_path / "outputs").exists()  # no run folder for a run that never started


@pytest.mark.parametrize("args,needle", [
    (["method=bogus"], "Could not find 'method/bogus'"),
    (["task.epoch=3"], "Key 'epoch' is not in struct"),
])
def test_hydra_errors_exit_2(cli_env, tmp_path, monkeypatch, capfd, args, needle):
    code, text = _in_process(args, cli_env, tmp_path, monkeypatch, capfd)
    assert code == 2 and needle in text, text
    assert not (tmp_path / "outputs").exists()


def test_missing_data_root_names_the_variable_and_writes_nothing(cli_env, tmp_path):
    root = tmp_path / "nonexistent"
    p = _run(["task=gcn"], {**cli_env, "DFA_BENCH_DATA": str(root)}, tmp_path)
    assert p.returncode == 2
    assert f"data root {root} does not exist (set DFA_BENCH_DATA" in p.stdout + p.stderr
    assert not root.exists() and not (tmp_path / "outputs").exists()


def test_missing_data_file_leaves_no_run_folder(cli_env, tmp_path):
    require("planetoid", "PubMed", "raw")
    raw = tmp_path / "data" / "planetoid" / "PubMed" / "raw"
    raw.mkdir(parents=True)  # an empty PubMed folder: every file is missing
    p = _run(["dataset=pubmed"], {**cli_env, "DFA_BENCH_DATA": str(tmp_path / "data")}, tmp_path)
    assert p.returncode == 2 and "missing from" in p.stdout + p.stderr
    assert not (tmp_path / "outputs").exists()
    assert [f.name for f in raw.iterdir()] == []  # the data root is only read


def test_slurm_launcher_off_a_cluster(cli_env, tmp_path, monkeypatch, capfd):
    code, text = _in_process(["-m", "hydra/launcher=slurm", "seed=0,1"], cli_env, tmp_path, monkeypatch, capfd)
    assert code == 2 and "needs a Slurm cluster" in text and "Traceback" not in text


def test_sweep_with_a_failed_run_reports_each_run_and_exits_1(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    p = _run(["-m", "task=gae", "task.epochs=2", "method=bp,drtp", "hydra.launcher.n_jobs=1",
              f"hydra.sweep.dir={tmp_path / 'sweep'}"], cli_env, tmp_path)
    assert p.returncode == 1, p.stderr
    report = [line for line in p.stderr.splitlines() if line.startswith("dfa-bench sweep:")]
    assert report[0].startswith("dfa-bench sweep: completed") and "0-gae-cora-gae_gcn-bp-seed0" in report[0]
    assert report[1].startswith("dfa-bench sweep: failed") and "method=drtp needs the error point" in report[1]
    assert report[2] == "dfa-bench sweep: 1 of 2 runs completed"
    assert not (tmp_path / "sweep" / "1-gae-cora-gae_gcn-drtp-seed0").exists()  # it never trained
    assert not (tmp_path / "sweep" / ".outcomes.jsonl").exists()


def test_ctrl_c_keeps_the_checkpoint_prints_the_resume_command_and_exits_130(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    out = tmp_path / "run"
    args = ["task=gcn", "threads=1", "alignment.every=0", "task.epochs=100000", "checkpoint_every=5",
            f"hydra.run.dir={out}"]
    p = subprocess.Popen([str(BIN / "dfa-bench"), *args], env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    deadline = time.time() + 240
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        raise AssertionError(f"dfa-bench did not stop on SIGINT; its stderr ends with: {err[-2000:]}") from None
    assert p.returncode == 130, err
    assert "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("dfa-bench: interrupted"))
    assert line.endswith(f"dfa-bench task=gcn threads=1 alignment.every=0 task.epochs=100000 checkpoint_every=5 "
                         f"hydra.run.dir={out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["checkpoint_epoch"] % 5 == 0
    assert (out / "checkpoint.pt").exists()


def test_summary_is_valid_json_with_provenance(cli_env, tmp_path):
    require("planetoid", "Cora", "raw")
    out = tmp_path / "run"
    p = _run(["task=gcn", "threads=1", "task.epochs=2", "model.settings.dfa.lr=1e30", f"hydra.run.dir={out}"],
             cli_env, tmp_path)
    assert p.returncode == 1  # diverged
    text = (out / "summary.json").read_text()
    assert "NaN" not in text
    s = json.loads(text)
    assert s["status"] == "diverged" and "loss is nan" in s["error"]
    assert len(s["config_id"]) == 12 and s["version"] and "commit" in s and "dirty" in s
    assert s["hardware"]["cores"] >= 1 and s["hardware"]["torch"]


def test_non_finite_numbers_are_written_as_null(tmp_path):
    from dfa_bench.runlog import _finite

    assert _finite({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf"), "e": 2}}) == {
        "a": None, "b": [1.0, None], "c": {"d": None, "e": 2}}
