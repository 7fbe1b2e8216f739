"""The curated-results check: every committed run is what its Makefile target makes with today's config."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from dfa_bench import curation

ROOT = Path(__file__).resolve().parent.parent


def test_sweep_targets_and_their_jobs(tmp_path):
    (tmp_path / "Makefile").write_text(
        "BIN := .venv/bin\nall: a\n"
        "a: install\n\t$(BIN)/dfa-bench -m task=gcn method=bp,dfa seed=0,1 \\\n\t\thydra.sweep.dir=results/sweeps/a\n"
        "b: install\n\t$(BIN)/dfa-bench task=gcn\n"
        "install:\n\ttrue\n")
    assert curation.sweep_targets(tmp_path / "Makefile") == ["a"]
    (command,) = curation.target_commands("a", tmp_path)
    assert command == ["task=gcn", "method=bp,dfa", "seed=0,1", "hydra.sweep.dir=results/sweeps/a"]
    jobs = curation.expand(command[:-1])
    assert jobs == [["task=gcn", "method=bp", "seed=0"], ["task=gcn", "method=bp", "seed=1"],
                    ["task=gcn", "method=dfa", "seed=0"], ["task=gcn", "method=dfa", "seed=1"]]


def test_a_run_whose_config_changed_is_reported_stale(tmp_path):
    """A copy of the project's conf/ and a one-run target: current, then stale once its config changes."""
    import shutil

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    (tmp_path / "Makefile").write_text("t:\n\tdfa-bench -m task=gcn method=dfa seed=3 hydra.sweep.dir=results/sweeps/t\n")
    jobs = curation.target_jobs(tmp_path)
    run = tmp_path / "results" / "sweeps" / "t" / "0-run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(jobs[0].config))
    (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    orphan = tmp_path / "results" / "sweeps" / "other" / "0-run"
    orphan.mkdir(parents=True)
    (orphan / "summary.json").write_text(json.dumps({"status": "completed"}))
    assert [p.split()[0] for p in curation.check(tmp_path, tmp_path / "results" / "sweeps")] == ["orphan"]
    config = {**jobs[0].config, "model": {**jobs[0].config["model"], "hidden": 32}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    problems = curation.check(tmp_path, tmp_path / "results" / "sweeps")
    stale = next(p for p in problems if p.startswith("stale"))
    assert "model.hidden" in stale and any(p.startswith("missing") for p in problems)


def test_committed_results_are_what_their_targets_make_today():
    """Slow-ish (composes every curated job, about 400, with Hydra: under a minute): the point of the check."""
    problems = [p for p in curation.check(ROOT, ROOT / "results" / "sweeps") if not p.startswith("missing")]
    assert problems == [], "\n".join(problems[:20])
