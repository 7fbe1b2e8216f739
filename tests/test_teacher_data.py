"""The generated teacher CTR data: Criteo's format, nested sizes, the teacher's parts, and a study run on it."""
import numpy as np
import pytest

from dfa_bench.data.ctr import parse_criteo_chunk
from dfa_bench.data.teacher import Teacher, teacher_data
from dfa_bench.errors import ConfigError
from dfa_bench.runner import run
from dfa_bench.schema import validate
from dfa_bench.tasks.recsys import auc_logloss


def test_rows_are_criteo_lines_and_a_smaller_set_is_a_prefix(tmp_path):
    small, large = teacher_data(tmp_path, 1_000, 0), teacher_data(tmp_path, 2_500, 0)
    lines = (large / "train.txt").read_text().splitlines(keepends=True)
    assert len(lines) == 2_500
    labels, codes, bad = parse_criteo_chunk(lines)
    assert not bad and codes.shape == (2_500, 39) and set(np.unique(labels)) == {0.0, 1.0}
    assert (small / "train.txt").read_text().splitlines(keepends=True) == lines[:1_000]
    assert np.array_equal(np.load(small / "logits.npy"), np.load(large / "logits.npy")[:1_000])
    assert teacher_data(tmp_path, 1_000, 1) != small  # another seed, another teacher and folder


def test_the_third_order_part_is_what_pairs_cannot_express():
    """The parts are uncorrelated (order 3 has no order-1 or order-2 component), the click rate is near
    25%, and the order-2 logit ranks clicks clearly worse than the whole teacher."""
    teacher = Teacher(0)
    rng = np.random.default_rng(123)
    cats = teacher.categories(rng, 100_000)
    o1, o2, o3 = teacher.parts(cats)
    corr = np.corrcoef([o1, o2, o3])
    assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 0.02), corr
    # no single sign field, and no pair of them, predicts the order-3 part
    s = np.stack([teacher.signs[j][cats[:, j]] for j in range(8)], axis=1)
    for a in range(8):
        assert abs(np.corrcoef(s[:, a], o3)[0, 1]) < 0.02
        for b in range(a + 1, 8):
            assert abs(np.corrcoef(s[:, a] * s[:, b], o3)[0, 1]) < 0.02
    logit, low = teacher.logits(cats)
    labels = (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(float)
    assert 0.23 < labels.mean() < 0.27
    whole, order2 = auc_logloss(labels, 1 / (1 + np.exp(-logit)))[0], auc_logloss(labels, 1 / (1 + np.exp(-low)))[0]
    assert whole > 0.83 and order2 < whole - 0.1


def test_a_study_run_on_teacher_data_reports_the_ceiling(make_cfg, tmp_path):
    cfg = make_cfg("experiment=recsys_teacher", "dataset.rows=4000", "method=dfa", "task.epochs=1",
                   "task.batch_size=512", "task.lr=3e-3")
    summary = run(cfg, tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 7  # 3,200 training rows, batches of 512
    m = summary["metrics"]
    assert m["test_auc_teacher"] > m["test_auc_teacher_order2"] > 0.5
    assert 0.0 < m["test_auc"] < 1.0 and "test_auc_without_deep" in m


def test_bad_generated_settings_are_one_clear_error(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="dataset.rows"):
        validate(make_cfg("experiment=recsys_teacher", "dataset.rows=5"))
    cfg = make_cfg("experiment=recsys_teacher", "dataset.rows=1000", "dataset.generated=other")
    with pytest.raises(ConfigError, match="generated CTR data set is 'teacher'"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
