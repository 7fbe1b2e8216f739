"""SplineConv in plain torch (dfa_bench/models/spline.py) against its formula, and model=spline end to end."""
import math

import pytest
import torch

from dfa_bench.methods import DFA, Shallow
from dfa_bench.models.graph import build_graph_model
from dfa_bench.models.spline import SplineConv, spline_basis, target_indegree
from dfa_bench.runner import run
from tests.conftest import require


def test_degree_one_open_basis_by_hand():
    # kernel 2, open: v = u (2 - 1) = u; the two functions are 1 - u on W_0 and u on W_1.
    basis, index = spline_basis(torch.tensor([0.0, 0.25, 1.0]), [2], [True], 1)
    torch.testing.assert_close(basis, torch.tensor([[1.0, 0.0], [0.75, 0.25], [1.0, 0.0]]))
    assert index.tolist() == [[0, 1], [0, 1], [1, 0]]  # u = 1: all weight on W_1 (index 2 wraps, weight 0)
    # kernel 3, open: v = 2u.
    basis, index = spline_basis(torch.tensor([[0.6]]), [3], [True], 1)
    torch.testing.assert_close(basis, torch.tensor([[0.8, 0.2]]))
    assert index.tolist() == [[1, 2]]


def test_closed_basis_wraps_around():
    # kernel 4, closed: v = 4u; u = 0.875 sits between W_3 and W_0.
    basis, index = spline_basis(torch.tensor([0.875, 1.0]), [4], [False], 1)
    torch.testing.assert_close(basis, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    assert index.tolist() == [[3, 0], [0, 1]]


@pytest.mark.parametrize("degree", [2, 3])
def test_higher_degrees_are_the_uniform_bspline_pieces(degree):
    t = torch.tensor([0.0, 0.3, 0.5, 0.9])
    pieces = {
        2: [(1 - t) ** 2 / 2, (-2 * t**2 + 2 * t + 1) / 2, t**2 / 2],
        3: [(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6],
    }[degree]
    kernel = degree + 3  # open: v = u * 3, so u = (1 + t) / 3 puts v in the second interval
    basis, index = spline_basis((1 + t) / 3, [kernel], [True], degree)
    torch.testing.assert_close(basis, torch.stack(pieces, 1))
    assert index.tolist() == [list(range(1, degree + 2))] * 4
    torch.testing.assert_close(basis.sum(1), torch.ones(4))  # a partition of unity


def test_two_dimensions_tensor_product_with_dimension_zero_fastest():
    # u = (0.5, 0.25), kernel (3, 2), open, degree 1: dim 0 v = 1 -> (W index 1: 1, 2: 0);
    # dim 1 v = 0.25 -> (0: 0.75, 1: 0.25). Kernel index = i0 + 3 i1.
    basis, index = spline_basis(torch.tensor([[0.5, 0.25]]), [3, 2], [True, True], 1)
    torch.testing.assert_close(basis, torch.tensor([[0.75, 0.0, 0.25, 0.0]]))
    assert index.tolist() == [[1, 2, 4, 5]]


def _hand_conv(aggr="mean"):
    conv = SplineConv(2, 1, dim=1, kernel_size=2, aggr=aggr)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]]))  # W_0 = (1, 2), W_1 = (3, 4)
        conv.lin.weight.copy_(torch.tensor([[10.0, 20.0]]))
        conv.bias.fill_(0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])  # 1 -> 0, 2 -> 0, 0 -> 1; node 2 has no in-edges
    pseudo = torch.tensor([[0.25], [1.0], [0.5]])
    return conv, x, edge_index, pseudo


@pytest.mark.parametrize("aggr, node0", [("mean", 15.25), ("add", 20.0), ("max", 17.5)])
def test_conv_output_for_known_weights_by_hand(aggr, node0):
    # Messages: 1 -> 0: 0.75 * x1.W_0 + 0.25 * x1.W_1 = 0.75 * 2 + 0.25 * 4 = 2.5;
    # 2 -> 0 (u = 1): x2.W_1 = 7;  0 -> 1 (u = 0.5): 0.5 * 1 + 0.5 * 3 = 2.
    # Root x.(10, 20) = 10, 20, 30; bias 0.5. Node 0: mean 4.75 / add 9.5 / max 7, + 10.5.
    conv, x, edge_index, pseudo = _hand_conv(aggr)
    out = conv(x, edge_index, pseudo)
    torch.testing.assert_close(out, torch.tensor([[node0], [22.5], [30.5]]))


def test_conv_gradients_match_the_dense_formula():
    torch.manual_seed(0)
    conv = SplineConv(3, 2, dim=1, kernel_size=3, degree=2)
    x = torch.randn(4, 3, requires_grad=True)
    edge_index = torch.tensor([[0, 1, 2, 3, 0], [1, 2, 3, 0, 2]])
    pseudo = torch.tensor([[0.1], [0.4], [0.7], [1.0], [0.55]])
    # Dense: x' = M x W_k-mixed: out_i = mean_j sum_k B_k(u_ij) x_j W_k + x_i W_root + b.
    basis, index = spline_basis(pseudo, [3], [True], 2)
    dense = []
    for e in range(5):
        h = sum(basis[e, s] * conv.weight[index[e, s]] for s in range(3))
        dense.append(x[edge_index[0, e]] @ h)
    count = torch.bincount(edge_index[1], minlength=4).clamp_min(1)
    expected = torch.zeros(4, 2).index_add(0, edge_index[1], torch.stack(dense)) / count[:, None]
    expected = expected + conv.lin(x) + conv.bias
    out = conv(x, edge_index, pseudo)
    torch.testing.assert_close(out, expected)
    g_out = torch.randn(4, 2)
    ours = torch.autograd.grad(out, [x, conv.weight], g_out, retain_graph=True)
    theirs = torch.autograd.grad(expected, [x, conv.weight], g_out)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_initialization_bounds_follow_pyg():
    conv = SplineConv(100, 8, dim=1, kernel_size=2)
    assert conv.weight.shape == (2, 100, 8)
    assert conv.weight.abs().max() <= 1 / math.sqrt(200)
    assert conv.lin.weight.abs().max() <= 1 / math.sqrt(100)
    assert torch.count_nonzero(conv.bias) == 0


def test_against_pyg_spline_conv_when_it_can_run():
    try:
        from torch_geometric.nn import SplineConv as PyGSplineConv

        PyGSplineConv(3, 2, dim=1, kernel_size=2)
    except ImportError as err:
        pytest.skip(f"PyG's SplineConv cannot run here ({err}); pyg-lib is not served by any reachable registry")
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 2], [1, 2, 3, 4, 5, 0, 3, 5]])
    for dim, kernel, is_open, degree in [(1, 2, True, 1), (2, [3, 4], [True, False], 2), (1, 5, False, 3)]:
        pseudo = torch.rand(edge_index.shape[1], dim)
        ours = SplineConv(3, 2, dim=dim, kernel_size=kernel, is_open_spline=is_open, degree=degree)
        theirs = PyGSplineConv(3, 2, dim=dim, kernel_size=kernel, is_open_spline=is_open, degree=degree)
        with torch.no_grad():
            theirs.weight.copy_(ours.weight)
            theirs.lin.weight.copy_(ours.lin.weight)
            theirs.bias.copy_(ours.bias)
        torch.testing.assert_close(ours(x, edge_index, pseudo), theirs(x, edge_index, pseudo))


def test_target_indegree_equals_pyg_transform():
    import torch_geometric.transforms as T
    from torch_geometric.data import Data

    edge_index = torch.tensor([[0, 1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 1, 0, 1, 1, 3]])
    expected = T.TargetIndegree()(Data(edge_index=edge_index, num_nodes=5)).edge_attr
    torch.testing.assert_close(target_indegree(edge_index, 5), expected)
    # in-degrees 1, 4, 1, 2, 0: node 1 receives 4 edges -> 1.0
    assert target_indegree(edge_index, 5)[:, 0].tolist() == [1.0, 0.25, 0.5, 1.0, 0.25, 1.0, 1.0, 0.5]


def _spline_model():
    cfg = dict(name="spline", hidden=4, dim=1, kernel_size=2, degree=1)
    return build_graph_model(cfg, dict(dropout=0.0, input_dropout=0.0), 3, 2)


def test_spline_net_feedback_point_after_the_hidden_layer():
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 1], [1, 2, 3, 4, 0, 3]])
    y = torch.tensor([0, 1, 0, 1, 1])

    def grads(method):
        torch.manual_seed(0)
        model = _spline_model()
        m = method.attach(model)
        m.backward(torch.nn.functional.cross_entropy(model(x, edge_index), y))
        return {n: p.grad for n, p in model.named_parameters()}

    shallow = grads(Shallow())
    assert all(shallow[n] is None for n in shallow if n.startswith("conv1."))
    assert all(shallow[n] is not None for n in shallow if n.startswith("conv2."))
    dfa = grads(DFA())
    assert all(g is not None and g.abs().sum() > 0 for g in dfa.values())
    for n in shallow:  # the top layer learns from its true gradient under both
        if n.startswith("conv2."):
            torch.testing.assert_close(dfa[n], shallow[n])


@pytest.mark.parametrize("method", ["bp", "dfa", "shallow"])
def test_model_spline_runs_on_cora(make_cfg, tmp_path, method):
    require("planetoid", "Cora", "raw")
    summary = run(make_cfg("task=gcn", "model=spline", f"method={method}", "task.epochs=3", "threads=1",
                           "alignment.every=2"), tmp_path)
    assert summary["status"] == "completed" and summary["model"] == "spline"
    assert 0.0 < summary["metrics"]["test_acc"] <= 1.0
    assert ("align/point/hidden" in summary.get("alignment", {})) == (method == "dfa")
