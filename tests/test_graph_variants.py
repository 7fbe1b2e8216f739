"""The as-run variants of the authors' graph code: where they differ from the method as described."""
import torch
import torch.nn.functional as F

from types import SimpleNamespace

from dfa_bench.methods import build_method
from dfa_bench.tasks.graph import NodeClassification
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


def test_dna_as_run_projects_the_target_not_the_residual():
    """model=dna_as_run takes the DFA error after log_softmax (the paper's code): e = -onehot/n on the rows in
    the loss; model=dna takes it on the logits: e = (softmax - onehot)/n. BP is the same for both."""
    from dfa_bench.methods import BP, DFA

    torch.manual_seed(0)
    x, edges, y = torch.randn(10, 6), torch.randint(0, 10, (2, 30)), torch.randint(0, 3, (10,))
    labelled = torch.arange(10) < 6
    errors, grads = {}, {}
    for name in ("dna", "dna_as_run"):
        for method in ("bp", "dfa"):
            torch.manual_seed(1)
            model = build_graph_model({"name": name, "hidden": 8, "layers": 2, "heads": 2, "groups": 1},
                                      {"dropout": 0.0, "attention_dropout": 0.0}, 6, 3).eval()

            def project(error, widths, name=name):
                errors[name] = error.clone()
                return [torch.zeros(error.shape[0], w) for w in widths]

            m = (DFA(project) if method == "dfa" else BP()).attach(model)
            data = SimpleNamespace(x=x, edge_index=edges, y=y, train_mask=labelled)
            m.backward(NodeClassification.loss(None, model, data))  # the task's loss
            grads[name, method] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    onehot = F.one_hot(y, 3).float() * labelled[:, None] / labelled.sum()
    torch.testing.assert_close(errors["dna_as_run"], -onehot)
    assert not torch.allclose(errors["dna"], -onehot) and torch.allclose(errors["dna"][~labelled], torch.zeros(4, 3))
    for n, g in grads["dna", "bp"].items():
        torch.testing.assert_close(g, grads["dna_as_run", "bp"][n])
    torch.testing.assert_close(grads["dna", "dfa"]["lin2.weight"], grads["dna_as_run", "dfa"]["lin2.weight"])
