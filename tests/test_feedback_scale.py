"""Given and drawn feedback matrices follow one scaling rule (`normalize`: divide by sqrt(widest point))."""
import math

import pytest
import torch
from torch import nn

from dfa_bench.feedback import FeedbackMatrices
from dfa_bench.methods import DFA
from tests.test_mechanism import MLP, _data, _grads  # x -> 7 -> [fp1] -> 6 -> [fp2] -> 3 -> [error]

WIDEST = 7


def _step(projection, seed=0):
    torch.manual_seed(seed)
    model = MLP()
    method = DFA(projection).attach(model)
    x, y = _data()
    method.backward(nn.functional.cross_entropy(model(x), y))
    return method, _grads(model)


def _raw_tinydfa_matrix(seed):
    """What TinyDFA draws before scaling: U[-1, 1) of shape (error width, widest), from the drawn one."""
    drawn, _ = _step(FeedbackMatrices(seed=seed))
    return drawn.projection.matrix_for("out", "fp1") * math.sqrt(WIDEST)


@pytest.mark.parametrize("as_dict", [False, True])
def test_given_raw_matrix_with_default_normalize_gives_the_drawn_update(as_dict):
    drawn, drawn_grads = _step(FeedbackMatrices(seed=4))
    raw = _raw_tinydfa_matrix(4)
    assert raw.abs().max() <= 1.0 and raw.abs().max() > 1.0 / math.sqrt(WIDEST)  # truly the raw values
    given = {"fp1": raw[:, :7], "fp2": raw[:, :6]} if as_dict else raw  # per point, or TinyDFA's one matrix
    user, user_grads = _step(FeedbackMatrices(matrices=given))  # normalize defaults to True, as when drawn
    for name in ("fp1", "fp2"):
        torch.testing.assert_close(user.projection.matrix_for("out", name), drawn.projection.matrix_for("out", name))
    for name, grad in drawn_grads.items():
        torch.testing.assert_close(user_grads[name], grad)


def test_normalize_false_uses_given_and_drawn_matrices_unscaled():
    raw = _raw_tinydfa_matrix(5)
    unscaled, _ = _step(FeedbackMatrices(seed=5, normalize=False))
    torch.testing.assert_close(unscaled.projection.matrix_for("out", "fp1"), raw)
    user, _ = _step(FeedbackMatrices(matrices=raw, normalize=False))
    torch.testing.assert_close(user.projection.matrix_for("out", "fp2"), raw[:, :6])


def test_independent_layout_takes_one_matrix_of_consecutive_blocks():
    drawn, drawn_grads = _step(FeedbackMatrices(layout="independent", seed=6))
    b1, b2 = (drawn.projection.matrix_for("out", n) * math.sqrt(WIDEST) for n in ("fp1", "fp2"))
    user, user_grads = _step(FeedbackMatrices(layout="independent", matrices=torch.cat([b1, b2], 1)))
    for name, grad in drawn_grads.items():
        torch.testing.assert_close(user_grads[name], grad)
    with pytest.raises(ValueError, match="needs \\(3, 13\\)"):
        _step(FeedbackMatrices(layout="independent", matrices=b1))


def test_fa_matrices_follow_the_documented_fan_in_rule():
    """fa.py: B ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in), whatever the layer's own init."""
    from dfa_bench.fa import FA

    model = nn.Sequential(nn.Linear(400, 300))
    nn.init.xavier_uniform_(model[0].weight)  # a glorot-initialised layer, as PyG's Linear
    b = FA(seed=0).attach(model).matrices["0"]
    assert b.shape == (300, 400) and b.abs().max() <= 1 / math.sqrt(400)
    assert b.std().item() == pytest.approx(1 / math.sqrt(3 * 400), rel=0.02)
    assert model[0].weight.std().item() == pytest.approx(math.sqrt(2 / 700), rel=0.02)  # not B's scale
    gaussian = FA(distribution="gaussian", seed=0).attach(nn.Sequential(nn.Linear(400, 300))).matrices["0"]
    assert gaussian.std().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)
