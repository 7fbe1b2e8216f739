"""Graph neural networks of the paper's Table 3, one feedback point after every hidden block.

Each model takes `settings` (the method's tuned dropouts, see conf/model/*.yaml) and exposes
`weight_decay_parameters()`, the parameters the paper's code regularizes.

The GCN models (`gcn`, `gcn3`) and the deep ChebConv and GAT of DFA-GNN's Table 4 (`cheb3`, `gat3`)
also describe their graph to the method (see `dfa_bench.marks`): their error point carries the
normalized adjacency S = D^-1/2 (A + I) D^-1/2 that every GCNConv applies, and each feedback point the
number of layers (applications of S) between it and the output. DFA-GNN (`method=dfa_gnn`) uses them;
every other method ignores them.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import ChebConv, DNAConv, GATConv, GCNConv

from dfa_bench.marks import ErrorPoint, FeedbackPoint
from dfa_bench.models.spline import SplineConv, target_indegree


class GCNOperator:
    """S = D^-1/2 (A + I) D^-1/2 as a sparse (nodes x nodes) tensor, S[i, j] = weight of edge j -> i.

    The operator GCNConv applies (PyG's `gcn_norm`: self-loops added, symmetric normalization), so
    GCNConv(x) = S @ (x W) + b. Built once per graph (the edge_index tensor) and kept.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._operator: torch.Tensor | None = None

    def __call__(self, edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
        key = (edge_index.data_ptr(), tuple(edge_index.shape), edge_index.device, num_nodes)
        if key != self._key:
            from torch_geometric.nn.conv.gcn_conv import gcn_norm

            index, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
            source, target = index[0], index[1]
            self._operator = torch.sparse_coo_tensor(
                torch.stack([target, source]), weight, (num_nodes, num_nodes), check_invariants=False).coalesce()
            self._key = key
        return self._operator


class TwoLayerConv(nn.Module):
    """conv(in->hidden), activation, dropout, [feedback point], conv(hidden->classes), [error point].

    GCN and ChebConv in the paper: weight decay on the first layer only; dropout on the hidden layer.
    """

    def __init__(self, conv1: nn.Module, conv2: nn.Module, dropout: float, input_dropout: float = 0.0,
                 activation=F.relu, operator: GCNOperator | None = None, feedback_before_dropout: bool = False) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.dropout, self.input_dropout, self.activation = dropout, input_dropout, activation
        # The paper's GAT code places its feedback point before the hidden dropout (model=gat_as_run): B e then
        # reaches the hidden layer without the dropout mask. The method as described: after it (the default).
        self.feedback_before_dropout = feedback_before_dropout
        self.operator = operator  # GCN: the propagation operator S, handed to the error point
        self.hidden = FeedbackPoint(hops=1 if operator is not None else None)
        self.logits = ErrorPoint()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        if self.operator is not None:
            self.logits.propagation = self.operator(edge_index, x.shape[0])
        x = F.dropout(x, self.input_dropout, self.training)
        h = self.activation(self.conv1(x, edge_index))
        if self.feedback_before_dropout:
            h = F.dropout(self.hidden(h), self.dropout, self.training)
        else:
            h = self.hidden(F.dropout(h, self.dropout, self.training))
        return self.logits(self.conv2(h, edge_index))

    def weight_decay_parameters(self) -> Iterable[nn.Parameter]:
        return self.conv1.parameters()

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The hidden representation (the first layer's activation), e.g. for t-SNE."""
        return self.activation(self.conv1(x, edge_index))


class GAT(TwoLayerConv):
    """The GAT of the paper's code: all parameters are weight-decayed."""

    def weight_decay_parameters(self) -> Iterable[nn.Parameter]:
        return self.parameters()


class DeepGraphNet(nn.Module):
    """`layers` graph convolutions (DFA-GNN's protocol, Zhao et al. 2024: 3 layers, 64 hidden units, no
    dropout; their Table 4 runs it with other convolutions): input dropout, [conv, activation, dropout,
    [feedback point]] x (layers - 1), conv -> classes, [error point].

    `model=gcn3` (GCNConv, ReLU), `cheb3` (ChebConv, ReLU) and `gat3` (GATConv with `heads` concatenated
    heads, ELU; the last layer one head). Weight decay on every parameter (DFA-GNN's "L2 penalty", not the
    first layer only as in Kipf's GCN).

    For DFA-GNN every model hands the method S = D^-1/2 (A + I) D^-1/2 (`GCNOperator`), the normalized
    adjacency their paper spreads errors with, and counts one hop per layer above a feedback point (the
    point after hidden layer l is L - l hops below the output). For GCN that is exactly the operator its
    layers apply; ChebConv (K = 2: one hop through the scaled Laplacian) and GAT (learned attention over
    the same neighbourhoods) aggregate over the same one-hop neighbourhoods with other weights, and
    DFA-GNN's paper does not say which operator its Table 4 spreads with: S is our choice, the same for all.
    """

    def __init__(self, convs: list[nn.Module], activation=F.relu, dropout: float = 0.0,
                 input_dropout: float = 0.0) -> None:
        super().__init__()
        if len(convs) < 2:
            raise ValueError(f"a deep graph network needs at least 2 layers, got {len(convs)}")
        layers = len(convs)
        self.convs = nn.ModuleList(convs)
        self.points = nn.ModuleList(FeedbackPoint(hops=layers - 1 - i) for i in range(layers - 1))
        self.logits = ErrorPoint()
        self.operator = GCNOperator()
        self.activation, self.dropout, self.input_dropout = activation, dropout, input_dropout

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activation (for t-SNE)."""
        for conv in self.convs[:-1]:
            x = self.activation(conv(x, edge_index))
        return x

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        self.logits.propagation = self.operator(edge_index, x.shape[0])
        h = F.dropout(x, self.input_dropout, self.training)
        for conv, point in zip(self.convs[:-1], self.points):
            h = point(F.dropout(self.activation(conv(h, edge_index)), self.dropout, self.training))
        return self.logits(self.convs[-1](h, edge_index))

    def weight_decay_parameters(self) -> Iterable[nn.Parameter]:
        return self.parameters()


def _deep_graph_net(name: str, cfg: Mapping[str, Any], in_dim: int, hidden: int, classes: int, dropout: float,
                    input_dropout: float) -> DeepGraphNet:
    """model=gcn3, cheb3 or gat3 (`DeepGraphNet`)."""
    layers = int(cfg["layers"])  # DeepGraphNet refuses fewer than 2
    if name == "gat3":
        heads = int(cfg["heads"])
        convs = [GATConv(in_dim if i == 0 else hidden * heads, hidden, heads=heads) for i in range(layers - 1)]
        convs.append(GATConv(hidden * heads, classes, heads=1, concat=False))
        return DeepGraphNet(convs, F.elu, dropout, input_dropout)
    widths = [in_dim] + [hidden] * (layers - 1) + [classes]
    if name == "cheb3":
        k = int(cfg["K"])
        convs = [ChebConv(a, b, K=k) for a, b in zip(widths[:-1], widths[1:])]
    else:
        convs = [GCNConv(a, b, cached=True) for a, b in zip(widths[:-1], widths[1:])]
    return DeepGraphNet(convs, F.relu, dropout, input_dropout)


class _WithPseudo(nn.Module):
    """A SplineConv called as conv(x, edge_index): the pseudo-coordinates come from the graph
    (`target_indegree`, PyG's `TargetIndegree` transform, as in the paper's code and PyG's citation example)."""

    def __init__(self, conv: SplineConv) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.conv(x, edge_index, target_indegree(edge_index, x.shape[0]))


class SplineNet(TwoLayerConv):
    """The paper's SplineConv net: dropout, SplineConv in->16, ELU, dropout, [fp], SplineConv 16->classes.

    All parameters are weight-decayed (the paper's code: Adam(model.parameters(), weight_decay=5e-3)).
    """

    def weight_decay_parameters(self) -> Iterable[nn.Parameter]:
        return self.parameters()


class DNA(nn.Module):
    """DNAConv "just jump" network: every layer attends over all earlier layers' states.

    `error_after_log_softmax` (model=dna_as_run) puts the error point after log_softmax, as the paper's
    code does (`models.py:227`): the error is then dL/d(log p) = -onehot/n on the labelled nodes, so DFA
    projects the target, not the residual softmax - onehot. The task then takes the negative
    log-likelihood of the output (`log_probabilities`), as the paper's code does: the loss, BP and the top
    layer's true gradient do not change.
    """

    def __init__(self, in_dim: int, classes: int, hidden: int, layers: int, heads: int, groups: int,
                 dropout: float, attention_dropout: float, error_after_log_softmax: bool = False) -> None:
        super().__init__()
        self.log_probabilities = error_after_log_softmax  # read by the task (its loss) and by forward
        self.lin1 = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(
            DNAConv(hidden, heads=heads, groups=groups, dropout=attention_dropout) for _ in range(layers)
        )
        self.points = nn.ModuleList(FeedbackPoint() for _ in range(layers + 1))
        self.lin2 = nn.Linear(hidden, classes)
        self.logits = ErrorPoint()
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.lin1(F.dropout(x, self.dropout, self.training)))
        h = self.points[0](F.dropout(h, self.dropout, self.training))
        states = [h]
        for conv, point in zip(self.convs, self.points[1:]):
            h = F.relu(conv(torch.stack(states, dim=1), edge_index))
            h = point(F.dropout(h, self.dropout, self.training))
            states.append(h)
        if self.log_probabilities:
            return self.logits(F.log_softmax(self.lin2(h), dim=-1))
        return self.logits(self.lin2(h))

    def weight_decay_parameters(self) -> Iterable[nn.Parameter]:
        return self.parameters()


def build_graph_model(cfg: Mapping[str, Any], settings: Mapping[str, Any], in_dim: int, classes: int) -> nn.Module:
    """The architecture `cfg.name` (conf/model/<name>.yaml) with the method's `settings`."""
    name = cfg["name"]
    dropout = float(settings.get("dropout", 0.0))
    input_dropout = float(settings.get("input_dropout", 0.0))
    hidden = int(cfg["hidden"])
    if name == "gcn":
        return TwoLayerConv(GCNConv(in_dim, hidden, cached=True), GCNConv(hidden, classes, cached=True),
                            dropout, input_dropout, operator=GCNOperator())
    if name in ("gcn3", "cheb3", "gat3"):
        return _deep_graph_net(name, cfg, in_dim, hidden, classes, dropout, input_dropout)
    if name == "spline":
        spline = dict(dim=int(cfg["dim"]), kernel_size=int(cfg["kernel_size"]), degree=int(cfg["degree"]),
                      is_open_spline=bool(cfg.get("open_spline", True)), aggr=str(cfg.get("aggr", "mean")))
        if cfg.get("pseudo", "target_indegree") != "target_indegree" or spline["dim"] != 1:
            raise ValueError("model=spline builds one pseudo-coordinate per edge, the target's in-degree "
                             "(pseudo: target_indegree, dim: 1)")
        return SplineNet(_WithPseudo(SplineConv(in_dim, hidden, **spline)),
                         _WithPseudo(SplineConv(hidden, classes, **spline)),
                         dropout, input_dropout, activation=F.elu)
    if name == "cheb":
        k = int(cfg["K"])
        return TwoLayerConv(ChebConv(in_dim, hidden, K=k), ChebConv(hidden, classes, K=k), dropout, input_dropout)
    if name in ("gat", "gat_as_run"):
        heads = int(cfg["heads"])
        att1, att2 = (float(a) for a in settings.get("attention_dropout", (0.0, 0.0)))
        return GAT(GATConv(in_dim, hidden, heads=heads, dropout=att1),
                   GATConv(hidden * heads, classes, heads=1, concat=False, dropout=att2),
                   dropout, input_dropout, activation=F.elu, feedback_before_dropout=name == "gat_as_run")
    if name in ("dna", "dna_as_run"):
        return DNA(in_dim, classes, hidden, int(cfg["layers"]), int(cfg["heads"]), int(cfg["groups"]),
                   dropout, float(settings.get("attention_dropout", 0.0)), error_after_log_softmax=name == "dna_as_run")
    raise ValueError(f"unknown graph model {name!r}")
