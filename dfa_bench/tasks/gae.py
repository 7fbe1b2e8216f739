"""Graph autoencoder link prediction (the paper's Table 4): GCN encoder, inner-product decoder.

Edges are split at random from the seed (5% validation, 10% test, as PyG's train_test_split_edges that
the paper's code uses); the encoder learns to reconstruct the training edges against negative samples
(PyG's GAE.recon_loss); AUC and average precision on the test edges at the epoch of best validation AUC.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from dfa_bench.tasks import method_settings
from dfa_bench.tasks.graph import load_planetoid


class GAEEncoder(nn.Module):
    """GCNConv in->32, ReLU, [feedback point], GCNConv 32->16, [error point on the embedding z]."""

    def __init__(self, in_dim: int, hidden: int, out: int) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        from dfa_bench.marks import ErrorPoint, FeedbackPoint

        self.conv1, self.conv2 = GCNConv(in_dim, hidden, cached=True), GCNConv(hidden, out, cached=True)
        self.hidden, self.embedding = FeedbackPoint(), ErrorPoint()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.hidden(torch.relu(self.conv1(x, edge_index)))
        return self.embedding(self.conv2(h, edge_index))


class LinkPrediction:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        import torch_geometric.transforms as T

        self.cfg, self.device = cfg, device
        self.settings = method_settings(cfg)
        data, _ = load_planetoid(cfg.dataset.planetoid, Path(cfg.data_root), Path(cfg.cache_root))
        torch.manual_seed(int(cfg.seed))  # the edge split is drawn from the run's seed
        split = T.RandomLinkSplit(num_val=0.05, num_test=0.1, is_undirected=True, split_labels=True,
                                  add_negative_train_samples=False)
        self.train_data, self.val_data, self.test_data = (d.to(device) for d in split(data))
        self.epochs = int(cfg.task.epochs or cfg.dataset.gae_epochs)
        self.patience, self.grad_clip = None, None

    def build_model(self) -> nn.Module:
        from torch_geometric.nn import GAE

        m = self.cfg.model
        return GAE(GAEEncoder(self.train_data.num_features, int(m.hidden), int(m.out)))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=float(self.settings.lr))

    def train_batches(self):
        yield self.train_data

    def batch_items(self, batch) -> tuple[int, str]:
        return int(batch.pos_edge_label_index.shape[1]), "edges"

    def loss(self, model: nn.Module, data) -> torch.Tensor:
        z = model.encode(data.x, data.edge_index)
        return model.recon_loss(z, data.pos_edge_label_index)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        z = model.encode(self.train_data.x, self.train_data.edge_index)
        out = {}
        for name, data in (("val", self.val_data), ("test", self.test_data)):
            auc, ap = model.test(z, data.pos_edge_label_index, data.neg_edge_label_index)
            out[f"{name}_auc"], out[f"{name}_ap"] = float(auc), float(ap)
        model.train()
        return out
