"""The as-run variants of the authors' graph code: where they differ from the method as described."""
import torch
import torch.nn.functional as F

from dfa_bench.methods import build_method
from dfa_bench.models.graph import build_graph_model


def _grads(name: str, method: str, dropout: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """One step of GAT (`name`) on a small random graph, the same weights, data and dropout masks."""
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    x, edges, y = torch.randn(12, 5), torch.randint(0, 12, (2, 40)), torch.randint(0, 3, (12,))
    settings = {"dropout": dropout, "input_dropout": 0.0, "attention_dropout": [0.0, 0.0]}
    torch.manual_seed(1)
    model = build_graph_model({"name": name, "hidden": 4, "heads": 2}, settings, 5, 3).train()
    cfg = OmegaConf.create({"name": method, "tuning": "dfa", "feedback": {"layout": "shared",
                            "distribution": "uniform", "normalize": True, "seed": None}})
    m = build_method(cfg, seed).attach(model)
    torch.manual_seed(2)
    m.backward(F.cross_entropy(model(x, edges), y))
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gat_as_run_takes_the_feedback_before_the_hidden_dropout():
    for method in ("bp", "shallow"):  # the mark's place changes nothing here
        a, b = _grads("gat", method, 0.5), _grads("gat_as_run", method, 0.5)
        assert all(torch.equal(a[n], b[n]) for n in a)
    a, b = _grads("gat", "dfa", 0.0), _grads("gat_as_run", "dfa", 0.0)  # no dropout: the same update
    assert all(torch.allclose(a[n], b[n]) for n in a)
    a, b = _grads("gat", "dfa", 0.5), _grads("gat_as_run", "dfa", 0.5)
    assert torch.equal(a["conv2.lin.weight"], b["conv2.lin.weight"])  # the top layer: the true gradient
    first = "conv1.lin.weight"
    assert not torch.allclose(a[first], b[first])  # below: with or without the dropout mask on B e
