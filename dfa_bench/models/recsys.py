"""Click-through-rate models of the paper's Table 2 (after torchfm, the library the paper's code uses).

Every model maps (batch, fields) category indices to one logit per sample, marked as the error point,
so the DFA error is e = sigmoid(logit) - label (over the batch size): a one-row feedback matrix.
Feedback points, as the paper's code (dfa_models.py) places them:

- MLP (DeepFM, DCN, AutoInt, AFN): after every hidden block Linear -> BatchNorm -> ReLU -> Dropout.
- FM: none (no hidden layer: FM trains the same way under every method; the paper runs it with BP only).
- DeepFM: the MLP reads the embeddings through a cut without feedback, so under DFA and shallow the
  embeddings learn only through the FM term, as in the paper's code; the linear and FM terms are above
  the feedback points and learn from their true gradient. `model=deepfm_embedding_feedback` puts a
  feedback point there instead (a diagnostic, not the paper's).
- Deep & Cross: on the embeddings, after every cross layer but the last, and on the concatenated
  [cross, deep] stack, below the final linear layer.
- AutoInt: on the embeddings, on the attention-embedding projection, between attention layers and on the
  flattened attention output.
- AFN: after the logarithmic neural network (LNN) layer. The paper's code never registered its
  embedding-level point, so there the embeddings did not learn under DFA or shallow; here they learn
  through the LNN block (the intended behaviour).

Models whose logit is a sum of parts (FM: linear + fm; DeepFM: linear + fm + deep; AutoInt: linear +
attention + deep; AFN: linear + deep) give them by name with `terms(x)`, so that the evaluation can say
what each part contributes (the task's `test_auc_only_<term>` and `test_auc_without_<term>`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfa_bench.marks import ErrorPoint, FeedbackPoint


class FeaturesEmbedding(nn.Module):
    """One embedding table for all fields (field offsets), Xavier-uniform initialized."""

    def __init__(self, field_dims: Sequence[int], dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(sum(field_dims), dim)
        offsets = torch.tensor([0, *field_dims[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        nn.init.xavier_uniform_(self.embedding.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x + self.offsets)


class FeaturesLinear(nn.Module):
    """The first-order term: one weight per category, summed over fields, plus a bias."""

    def __init__(self, field_dims: Sequence[int]) -> None:
        super().__init__()
        self.weights = FeaturesEmbedding(field_dims, 1)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights(x).sum(dim=(1, 2)) + self.bias


def fm_interaction(e: torch.Tensor) -> torch.Tensor:
    """Pairwise factorization-machine term of embeddings (batch, fields, dim) -> (batch,)."""
    return 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)


class MLP(nn.Module):
    """Hidden blocks Linear -> BatchNorm -> ReLU -> Dropout -> [feedback point]; optional 1-unit output."""

    def __init__(self, in_dim: int, dims: Sequence[int], dropout: float, output: bool = True) -> None:
        super().__init__()
        blocks = []
        for d in dims:
            blocks += [nn.Linear(in_dim, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Dropout(dropout), FeedbackPoint()]
            in_dim = d
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Linear(in_dim, 1) if output else None
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(x)
        return self.out(h).squeeze(1) if self.out is not None else h


class FM(nn.Module):
    def __init__(self, field_dims: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.logit = ErrorPoint()

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"linear": self.linear(x), "fm": fm_interaction(self.embedding(x))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.terms(x)
        return self.logit(t["linear"] + t["fm"])


class DeepFM(nn.Module):
    """`embedding_feedback` (model=deepfm_embedding_feedback, not the paper's): a feedback point on the MLP's
    input, so that the embeddings also learn from B e through the deep part."""

    def __init__(self, field_dims: Sequence[int], embed_dim: int, mlp: Sequence[int], dropout: float,
                 embedding_feedback: bool = False) -> None:
        super().__init__()
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.mlp_input = FeedbackPoint(feedback=embedding_feedback)  # the paper's DeepFM: detached, no feedback
        self.mlp = MLP(len(field_dims) * embed_dim, mlp, dropout)
        self.logit = ErrorPoint()

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embedding(x)
        return {"linear": self.linear(x), "fm": fm_interaction(e), "deep": self.mlp(self.mlp_input(e.flatten(1)))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.terms(x)
        return self.logit(t["linear"] + t["fm"] + t["deep"])


class CrossLayer(nn.Module):
    """x_{l+1} = x_0 * (w . x_l) + b + x_l."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Linear(dim, 1, bias=False)
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.w(x) + self.b + x


class DeepCross(nn.Module):
    def __init__(self, field_dims: Sequence[int], embed_dim: int, cross_layers: int, mlp: Sequence[int],
                 dropout: float) -> None:
        super().__init__()
        dim = len(field_dims) * embed_dim
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.embedded = FeedbackPoint()
        self.cross = nn.ModuleList(CrossLayer(dim) for _ in range(cross_layers))
        self.cross_points = nn.ModuleList(FeedbackPoint() for _ in range(cross_layers - 1))
        self.mlp = MLP(dim, mlp, dropout, output=False)
        self.stack = FeedbackPoint()
        self.out = nn.Linear(dim + self.mlp.out_dim, 1)
        self.logit = ErrorPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.embedded(self.embedding(x).flatten(1))
        xl = x0
        for i, layer in enumerate(self.cross):
            xl = layer(x0, xl)
            if i < len(self.cross_points):
                xl = self.cross_points[i](xl)
        stack = self.stack(torch.cat([xl, self.mlp(x0)], dim=1))
        return self.logit(self.out(stack).squeeze(1))


class AutoInt(nn.Module):
    def __init__(self, field_dims: Sequence[int], embed_dim: int, attention_dim: int, heads: int,
                 attention_layers: int, mlp: Sequence[int], dropout: float, residual: bool = True) -> None:
        super().__init__()
        fields = len(field_dims)
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.embedded = FeedbackPoint()
        self.attention_embedding = nn.Linear(embed_dim, attention_dim)
        self.projected = FeedbackPoint()
        self.attention = nn.ModuleList(
            nn.MultiheadAttention(attention_dim, heads, batch_first=True) for _ in range(attention_layers)
        )
        self.between = nn.ModuleList(FeedbackPoint() for _ in range(attention_layers - 1))
        self.residual = nn.Linear(embed_dim, attention_dim) if residual else None
        self.attended = FeedbackPoint()
        self.attention_out = nn.Linear(fields * attention_dim, 1)
        self.mlp = MLP(fields * embed_dim, mlp, dropout)
        self.logit = ErrorPoint()

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embedded(self.embedding(x))
        h = self.projected(self.attention_embedding(e))
        for i, attention in enumerate(self.attention):
            h = attention(h, h, h, need_weights=False)[0]
            if i < len(self.between):
                h = self.between[i](h)
        if self.residual is not None:
            h = h + self.residual(e)
        h = self.attended(F.relu(h).flatten(1))
        return {"linear": self.linear(x), "attention": self.attention_out(h).squeeze(1), "deep": self.mlp(e.flatten(1))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.terms(x)
        return self.logit(t["linear"] + t["attention"] + t["deep"])


class AFN(nn.Module):
    """Adaptive Factorization Network: a logarithmic neural network (LNN) layer, then an MLP."""

    def __init__(self, field_dims: Sequence[int], embed_dim: int, lnn_dim: int, mlp: Sequence[int],
                 dropout: float) -> None:
        super().__init__()
        fields = len(field_dims)
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.lnn = nn.Linear(fields, lnn_dim, bias=False)
        nn.init.normal_(self.lnn.weight, 0.0, 0.1)
        self.lnn_out = FeedbackPoint()
        self.mlp = MLP(lnn_dim * embed_dim, mlp, dropout)
        self.logit = ErrorPoint()

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embedding(x)  # (batch, fields, dim)
        log_e = torch.log1p(e.abs() + 1e-7).transpose(1, 2)  # (batch, dim, fields)
        h = F.relu(torch.expm1(self.lnn(log_e))).flatten(1)  # (batch, dim * lnn_dim)
        return {"linear": self.linear(x), "deep": self.mlp(self.lnn_out(h))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.terms(x)
        return self.logit(t["linear"] + t["deep"])


def build_ctr_model(cfg: Mapping[str, Any], settings: Mapping[str, Any], field_dims: Sequence[int]) -> nn.Module:
    """The architecture `cfg.name` (conf/model/<name>.yaml) with the method's `settings` (dropout)."""
    name, dropout = cfg["name"], float(settings.get("dropout", 0.0))
    if name == "fm":
        return FM(field_dims, cfg["embed_dim"])
    if name in ("deepfm", "deepfm_embedding_feedback"):
        return DeepFM(field_dims, cfg["embed_dim"], cfg["mlp"], dropout, embedding_feedback=name != "deepfm")
    if name == "deepcross":
        return DeepCross(field_dims, cfg["embed_dim"], cfg["cross_layers"], cfg["mlp"], dropout)
    if name == "autoint":
        return AutoInt(field_dims, cfg["embed_dim"], cfg["attention_dim"], cfg["heads"], cfg["attention_layers"],
                       cfg["mlp"], dropout, cfg.get("residual", True))
    if name == "afn":
        return AFN(field_dims, cfg["embed_dim"], cfg["lnn_dim"], cfg["mlp"], dropout)
    raise ValueError(f"unknown CTR model {name!r}")
