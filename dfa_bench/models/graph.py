"""Graph neural networks of the paper's Table 3, one feedback point after every hidden block.

Each model takes `settings` (the method's tuned dropouts, see conf/model/*.yaml) and exposes
`weight_decay_parameters()`, the parameters the paper's code regularizes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import ChebConv, DNAConv, GATConv, GCNConv

from dfa_bench.marks import ErrorPoint, FeedbackPoint


class TwoLayerConv(nn.Module):
    """conv(in->hidden), activation, dropout, [feedback point], conv(hidden->classes), [error point].

    GCN and ChebConv in the paper: weight decay on the first layer only; dropout on the hidden layer.
    """

    def __init__(self, conv1: nn.Module, conv2: nn.Module, dropout: float, input_dropout: float = 0.0,
                 activation=F.relu) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.dropout, self.input_dropout, self.activation = dropout, input_dropout, activation
        self.hidden = FeedbackPoint()
        self.logits = ErrorPoint()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.input_dropout, self.training)
        h = self.activation(self.conv1(x, edge_index))
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


class DNA(nn.Module):
    """DNAConv "just jump" network: every layer attends over all earlier layers' states."""

    def __init__(self, in_dim: int, classes: int, hidden: int, layers: int, heads: int, groups: int,
                 dropout: float, attention_dropout: float) -> None:
        super().__init__()
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
                            dropout, input_dropout)
    if name == "cheb":
        k = int(cfg["K"])
        return TwoLayerConv(ChebConv(in_dim, hidden, K=k), ChebConv(hidden, classes, K=k), dropout, input_dropout)
    if name == "gat":
        heads = int(cfg["heads"])
        att1, att2 = (float(a) for a in settings.get("attention_dropout", (0.0, 0.0)))
        return GAT(GATConv(in_dim, hidden, heads=heads, dropout=att1),
                   GATConv(hidden * heads, classes, heads=1, concat=False, dropout=att2),
                   dropout, input_dropout, activation=F.elu)
    if name == "dna":
        return DNA(in_dim, classes, hidden, int(cfg["layers"]), int(cfg["heads"]), int(cfg["groups"]),
                   dropout, float(settings.get("attention_dropout", 0.0)))
    raise ValueError(f"unknown graph model {name!r}")
