"""Unit tests of the DFA mechanism on a small MLP, against the formulas computed independently here."""
import math

import pytest
import torch
from torch import nn

from dfa_bench.alignment import angle_deg
from dfa_bench.feedback import CallableProjection, FeedbackMatrices
from dfa_bench.marks import ErrorPoint, FeedbackPoint
from dfa_bench.methods import BP, DFA, Shallow


class MLP(nn.Module):
    """x -> W1 -> tanh -> [fp1] -> W2 -> tanh -> [fp2] -> W3 -> [error] ."""

    def __init__(self, widths=(5, 7, 6, 3)):
        super().__init__()
        self.l1 = nn.Linear(widths[0], widths[1])
        self.l2 = nn.Linear(widths[1], widths[2])
        self.l3 = nn.Linear(widths[2], widths[3])
        self.fp1, self.fp2, self.out = FeedbackPoint(), FeedbackPoint(), ErrorPoint()

    def forward(self, x):
        h1 = self.fp1(torch.tanh(self.l1(x)))
        h2 = self.fp2(torch.tanh(self.l2(h1)))
        return self.out(self.l3(h2))


def _data(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _grads(model):
    return {n: p.grad.clone() if p.grad is not None else None for n, p in model.named_parameters()}


@pytest.mark.parametrize("layout", ["shared", "independent"])
def test_dfa_update_equals_formula(layout):
    torch.manual_seed(0)
    model = MLP()
    method = DFA(FeedbackMatrices(layout=layout, seed=3)).attach(model)
    x, y = _data()
    loss = nn.functional.cross_entropy(model(x), y)
    method.backward(loss)

    # Independent computation of the DFA formula.
    with torch.no_grad():
        a1 = model.l1(x)
        h1 = torch.tanh(a1)
        a2 = model.l2(h1)
        h2 = torch.tanh(a2)
        logits = model.l3(h2)
        e = (torch.softmax(logits, 1) - nn.functional.one_hot(y, 3).float()) / len(y)  # dL/dlogits
        b1 = method.projection.matrix_for("out", "fp1")
        b2 = method.projection.matrix_for("out", "fp2")
        d1 = (e @ b1) * (1 - h1**2)
        d2 = (e @ b2) * (1 - h2**2)
    g = _grads(model)
    torch.testing.assert_close(g["l1.weight"], d1.T @ x)
    torch.testing.assert_close(g["l1.bias"], d1.sum(0))
    torch.testing.assert_close(g["l2.weight"], d2.T @ h1)
    torch.testing.assert_close(g["l2.bias"], d2.sum(0))
    # The top layer learns from its true gradient.
    torch.testing.assert_close(g["l3.weight"], e.T @ h2)
    torch.testing.assert_close(g["l3.bias"], e.sum(0))

    widest = 7
    if layout == "shared":  # TinyDFA: one matrix, prefix slices, scaled by 1/sqrt(widest)
        torch.testing.assert_close(b2, b1[:, :6])
    else:
        assert not torch.allclose(b2, b1[:, :6])
    assert b1.abs().max() <= 1 / math.sqrt(widest)


def test_dfa_cuts_block_inputs_without_gradient():
    """The next block's input is a plain detached tensor: no gradient is computed for it."""
    model = MLP()
    seen = []
    model.l2.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    method = DFA().attach(model)
    x, y = _data()
    method.backward(nn.functional.cross_entropy(model(x), y))
    assert not seen[0].requires_grad and seen[0].grad_fn is None


def test_bp_mode_equals_plain_autograd():
    torch.manual_seed(1)
    model = MLP()
    x, y = _data(1)
    nn.functional.cross_entropy(model(x), y).backward()  # unattached marks are the identity
    plain = _grads(model)
    model.zero_grad(set_to_none=True)
    method = BP().attach(model)
    method.backward(nn.functional.cross_entropy(model(x), y))
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, plain[name])


def test_shallow_trains_only_the_top_layer():
    model = MLP()
    method = Shallow().attach(model)
    x, y = _data()
    method.backward(nn.functional.cross_entropy(model(x), y))
    g = _grads(model)
    assert g["l1.weight"] is None and g["l2.weight"] is None
    assert g["l3.weight"] is not None and g["l3.weight"].abs().sum() > 0


def test_measured_step_sets_the_hot_path_gradients_and_true_angles():
    torch.manual_seed(2)
    model = MLP()
    method = DFA(FeedbackMatrices(seed=5)).attach(model)
    x, y = _data(2)
    method.backward(nn.functional.cross_entropy(model(x), y))
    hot = _grads(model)
    model.zero_grad(set_to_none=True)
    loss, angles = method.measured_step(lambda: nn.functional.cross_entropy(model(x), y))
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, hot[name])

    # True BP gradients from an unattached copy of the weights.
    twin = MLP()
    twin.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(twin(x), y).backward()
    for name in ("l1.weight", "l2.weight", "l1.bias", "l2.bias"):
        expected = angle_deg(hot[name], dict(twin.named_parameters())[name].grad)
        assert angles[f"align/param/{name}"] == pytest.approx(expected, abs=1e-6)
    assert "align/param/l3.weight" not in angles  # the top layer's update is its true gradient
    assert set(k for k in angles if k.startswith("align/point/")) == {"align/point/fp1", "align/point/fp2"}


def test_angles_on_known_vectors():
    v = torch.tensor([1.0, 2.0, -3.0])
    assert angle_deg(v, v) == pytest.approx(0.0, abs=1e-6)
    assert angle_deg(v, -v) == pytest.approx(180.0, abs=1e-6)
    assert angle_deg(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    assert angle_deg(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(45.0)
    assert math.isnan(angle_deg(torch.zeros(3), v))


def test_feedback_matrices_are_seeded_and_restored():
    x, y = _data()

    def drawn(seed):
        model = MLP()
        method = DFA(FeedbackMatrices(seed=seed)).attach(model)
        method.backward(nn.functional.cross_entropy(model(x), y))
        return method

    a, b, c = drawn(1), drawn(1), drawn(2)
    torch.testing.assert_close(a.projection.matrix_for("out", "fp1"), b.projection.matrix_for("out", "fp1"))
    assert not torch.allclose(a.projection.matrix_for("out", "fp1"), c.projection.matrix_for("out", "fp1"))
    restored = DFA(FeedbackMatrices(seed=99))
    restored.load_state_dict(a.state_dict())
    torch.testing.assert_close(restored.projection.matrix_for("out", "fp2"), a.projection.matrix_for("out", "fp2"))


def test_user_matrices_and_callable_projection():
    x, y = _data()
    b1, b2 = torch.randn(3, 7), torch.randn(3, 6)
    model = MLP()
    method = DFA(FeedbackMatrices(matrices={"fp1": b1, "fp2": b2}, normalize=False)).attach(model)  # used as given
    method.backward(nn.functional.cross_entropy(model(x), y))
    torch.testing.assert_close(method.projection.matrix_for("out", "fp1"), b1)
    by_matrices = _grads(model)

    calls = []

    def optical(error, widths):  # e.g. a hardware random projection
        calls.append(widths)
        return [error @ b1, error @ b2]

    model.zero_grad(set_to_none=True)
    method = DFA(optical).attach(model)
    assert isinstance(method.projection, CallableProjection)
    method.backward(nn.functional.cross_entropy(model(x), y))
    assert calls == [[7, 6]]
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, by_matrices[name])


def test_sample_cosine_on_known_vectors():
    from dfa_bench.alignment import sample_cosine

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [3.0, 3.0]])
    b = torch.tensor([[2.0, 0.0], [1.0, 0.0], [5.0, 5.0], [-1.0, -1.0]])
    # rows: cos 1, cos 0, skipped (a is zero), cos -1
    assert sample_cosine(a, b) == pytest.approx(0.0)
    assert sample_cosine(a[:2], b[:2]) == pytest.approx(0.5)
    assert math.isnan(sample_cosine(torch.zeros(2, 2), b[:2]))
