"""The paper's Transformer language model: causal, post-LayerNorm blocks (as nn.TransformerEncoderLayer),
sinusoidal positions, untied input embedding and output projection, initialized U(-0.1, 0.1).

Feedback points (`placement`):
- `macro`: one per block, on the block output (after the second residual + LayerNorm); attention and
  feed-forward inside a block learn by local backprop from it.
- `micro`: three per block: after attention + residual + LayerNorm, after the feed-forward hidden
  activation (ReLU + dropout), and on the block output.
The error point sits on the last block's output, before the vocabulary projection (the paper's default:
e is the d_model-wide gradient per token), or after it with `error_after_vocab`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dfa_bench.marks import ErrorPoint, FeedbackPoint


class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, placement: str) -> None:
        super().__init__()
        if placement not in ("macro", "micro"):
            raise ValueError(f"placement must be 'macro' or 'micro', got {placement!r}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln1 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        micro = placement == "micro"
        self.attended = FeedbackPoint() if micro else nn.Identity()
        self.ff_hidden = FeedbackPoint() if micro else nn.Identity()
        self.out = FeedbackPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(b, t, d)
        x = self.attended(self.ln1(x + F.dropout(self.proj(a), self.dropout, self.training)))
        h = self.ff_hidden(F.dropout(F.relu(self.ff1(x)), self.dropout, self.training))
        return self.out(self.ln2(x + F.dropout(self.ff2(h), self.dropout, self.training)))


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return pe


class TransformerLM(nn.Module):
    def __init__(self, vocab: int, d_model: int = 512, layers: int = 6, heads: int = 8, d_ff: int = 2048,
                 dropout: float = 0.1, context: int = 128, placement: str = "macro",
                 error_after_vocab: bool = False) -> None:
        super().__init__()
        self.d_model, self.dropout, self.error_after_vocab = d_model, dropout, error_after_vocab
        self.embedding = nn.Embedding(vocab, d_model)
        self.register_buffer("positions", sinusoidal_positions(context, d_model), persistent=False)
        self.blocks = nn.ModuleList(Block(d_model, heads, d_ff, dropout, placement) for _ in range(layers))
        self.head = nn.Linear(d_model, vocab)
        self.error = ErrorPoint()
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.head.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embedding(idx) * math.sqrt(self.d_model) + self.positions[: idx.shape[1]]
        x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        if self.error_after_vocab:
            return self.error(self.head(x))
        return self.head(self.error(x))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue `idx` (1 x T) by `tokens` tokens, sampling from the (top-k) softmax."""
        context = self.positions.shape[0]
        for _ in range(tokens):
            logits = self(idx[:, -context:])[:, -1, :].float() / max(temperature, 1e-5)
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
