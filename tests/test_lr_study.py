"""The learning-rate study's table on hand-made runs: best lr by validation, paired differences, the grid,
the parts of the logit; its runs stay out of Table 2."""
import json
from pathlib import Path

import yaml

from dfa_bench.lr_study import write_lr_studies
from dfa_bench.tables import TABLES, read_runs, write_table
from tests.test_tables import _run

RECSYS = next(spec for spec in TABLES if spec.name == "recsys")
# (method, lr) -> (val_auc, test_auc) of seed 0; seed 1 adds 0.01 to both
GRID = {("bp", 1e-3): (0.70, 0.71), ("bp", 1e-2): (0.75, 0.74), ("bp", 1e-1): (0.60, 0.60), ("dfa", 1e-3): (0.73, 0.60),
        ("dfa", 1e-2): (0.72, 0.80), ("shallow", 1e-3): (0.65, 0.66), ("shallow", 1e-2): (0.64, 0.62)}


def _study(root: Path) -> None:
    for (method, lr), (val, test) in GRID.items():
        for seed in range(2):
            path = root / f"{method}-{lr}-{seed}"
            _run(path, seed, method, None, task="recsys", dataset="movielens100k", model="deepfm",
                 metrics={"val_auc": val + seed / 100, "test_auc": test + seed / 100, "test_logloss": 0.5,
                          "test_auc_only_deep": 0.55, "test_auc_without_deep": test - 0.05})
            config = yaml.safe_load((path / "config.yaml").read_text())
            config["task"].update(protocol="lr_sweep", lr=lr, selection="val_auc")
            (path / "config.yaml").write_text(yaml.safe_dump(config))


def test_each_method_at_its_best_validation_lr(tmp_path):
    _study(tmp_path / "runs")
    written = write_lr_studies(read_runs(tmp_path / "runs"), tmp_path / "tables", tmp_path / "figures")
    assert {p.name for p in written} == {"recsys-lr.md", "lr-recsys-movielens100k-deepfm.png"}
    md = (tmp_path / "tables" / "recsys-lr.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in md.split("All learning rates")[0].splitlines() if line.startswith("| ")}
    # chosen by validation, not test: DFA's best validation lr (1e-3) has the worse test AUC
    assert rows["bp"][:3] == ["0.01", "0.7550 ± 0.0071", "0.7450 ± 0.0071"]  # inside its grid
    assert rows["dfa"][:3] == ["0.001 (edge)", "0.7350 ± 0.0071", "0.6050 ± 0.0071"]  # its smallest lr
    assert rows["shallow"][:3] == ["0.001 (edge)", "0.6550 ± 0.0071", "0.6650 ± 0.0071"]
    assert "(edge): the best lr is the smallest or largest" in md
    # paired by seed: dfa 0.60/0.61 against shallow 0.66/0.67
    assert "dfa − shallow: -0.0600 ± 0.0000 (dfa ahead in 0 of 2 seeds; dfa at lr 0.001, shallow at lr 0.001)" in md
    assert "0.8050 " not in md.split("All learning rates")[0]
    summary = md.split("## Summary")[1].split("## ")[0]  # the same comparison, at the top of the file
    assert summary.strip().splitlines()[-1].startswith("- movielens100k, deepfm: dfa − shallow: -0.0600 ± 0.0000")
    grid = md.split("All learning rates")[1]
    assert "| dfa      | 0.6050*    | 0.8050    | –        |" in grid  # the mark sits on the selected lr
    assert "| deep alone" in md and "0.5500 ± 0.0000" in md


def test_study_runs_stay_out_of_table_2(tmp_path):
    _study(tmp_path)
    _run(tmp_path / "paper", 0, "bp", None, task="recsys", dataset="movielens100k", model="deepfm",
         metrics={"test_auc": 0.7, "test_logloss": 0.5})
    md = write_table(RECSYS, read_runs(tmp_path), tmp_path / "tables").read_text()
    assert "0.7000" in md and "0.74" not in md and "lr=" not in md


def test_a_generated_data_set_at_several_sizes_gets_a_size_summary(tmp_path):
    """Per size, each method at its own best lr; the teacher's references; DFA − shallow paired by seed."""
    for rows, (bp, dfa, shallow) in ((10_000, (0.60, 0.55, 0.58)), (100_000, (0.80, 0.72, 0.65))):
        for method, test in (("bp", bp), ("dfa", dfa), ("shallow", shallow)):
            for lr, shift in ((1e-3, 0.0), (3e-3, -0.02)):  # 1e-3 is every method's best
                path = tmp_path / f"{rows}-{method}-{lr}"
                _run(path, 0, method, None, task="recsys", dataset="ctr_teacher", model="deepfm",
                     metrics={"val_auc": test + shift, "test_auc": test + shift, "test_logloss": 0.5,
                              "test_auc_teacher": 0.85, "test_auc_teacher_order2": 0.69})
                config = yaml.safe_load((path / "config.yaml").read_text())
                config["task"].update(protocol="lr_sweep", lr=lr, selection="val_auc")
                config["dataset"].update(rows=rows, generated="teacher")
                (path / "config.yaml").write_text(yaml.safe_dump(config))
    written = write_lr_studies(read_runs(tmp_path), tmp_path / "tables", tmp_path / "figures")
    assert {p.name for p in written} >= {"size-recsys-ctr_teacher-deepfm.png", "lr-recsys-ctr_teacher-10000-deepfm.png"}
    md = (tmp_path / "tables" / "recsys-lr.md").read_text()
    summary = md.split("## ctr_teacher (generated data), deepfm: against the data size")[1].split("## ")[0]
    assert "| 100,000 | 0.8000 (lr 0.001 (edge)) | 0.7200 (lr 0.001 (edge)) | 0.6500 (lr 0.001 (edge)) | 0.8500" in summary
    assert "| 10,000  | 0.6000 (lr 0.001 (edge)) | 0.5500 (lr 0.001 (edge)) | 0.5800 (lr 0.001 (edge)) | 0.8500" in summary
    assert "0.0700" in summary and "-0.0300" in summary  # dfa − shallow at each size
    assert "## ctr_teacher (generated, 100,000 rows), deepfm" in md


def test_study_runs_stay_out_of_the_alignment_table(tmp_path):
    from dfa_bench.tables import write_all

    _study(tmp_path / "runs")
    for path in (tmp_path / "runs").iterdir():
        summary = json.loads((path / "summary.json").read_text())
        summary["alignment"] = {"align/param/mlp.blocks.0.weight": 60.0}
        (path / "summary.json").write_text(json.dumps(summary))
    written = {p.name for p in write_all(tmp_path / "runs", tmp_path / "t", tmp_path / "f", None)}
    assert "recsys-lr.md" in written and "alignment.md" not in written
