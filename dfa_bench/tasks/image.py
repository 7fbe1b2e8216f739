"""Image classification with the companion paper's fully connected network (arXiv 1906.04554).

Minibatch training on flattened images (`dfa_bench.data.images`): mean cross-entropy, plain SGD as in the
paper's code (or Adam), accuracy on the train, validation and test sets after every epoch; the summary
reports the epoch of best validation accuracy. The bottleneck study (`experiment=bottleneck`) sweeps the
width of one hidden layer and reads the alignment angles the runner logs.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dfa_bench.data.images import load_images
from dfa_bench.errors import ConfigError
from dfa_bench.tasks import method_settings


class ImageClassification:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.settings = method_settings(cfg)
        self.epochs, self.patience, self.grad_clip = int(cfg.task.epochs), None, None
        self.batch_size = int(cfg.task.batch_size)
        val_fraction = float(cfg.task.val_fraction)
        if not 0 < val_fraction < 1:
            raise ConfigError(f"task.val_fraction={val_fraction}: expected a fraction strictly between 0 and 1")
        b = cfg.model.get("bottleneck") or {}
        if b.get("size") is not None and b.get("layer") is None:
            raise ConfigError("model.bottleneck.size is set but model.bottleneck.layer is null: say which hidden "
                              "layer (0-based) to narrow, e.g. model.bottleneck.layer=1")
        self.data = load_images(cfg.dataset.name, Path(cfg.data_root), val_fraction, Path(cfg.cache_root))
        if not 1 <= self.batch_size <= len(self.data.train_y):
            raise ConfigError(f"task.batch_size={self.batch_size}: expected 1 to {len(self.data.train_y)}, the number "
                              f"of training images of {cfg.dataset.name}")
        for split in ("train", "val", "test"):
            for kind in ("x", "y"):
                setattr(self.data, f"{split}_{kind}", getattr(self.data, f"{split}_{kind}").to(device))
        self.generator = torch.Generator().manual_seed(int(cfg.seed))
        if b.get("size") is not None:  # one table row per width
            self.variant = f"bottleneck {b.get('mode', 'mask')} {int(b['size']):>4}"

    def build_model(self) -> nn.Module:
        from dfa_bench.models.mlp import MLP

        m, b = self.cfg.model, self.cfg.model.get("bottleneck") or {}
        try:
            return MLP(self.data.features, self.data.classes, list(m.hidden), activation=str(m.activation),
                       dropout=float(self.settings.get("dropout", 0.0)), bottleneck_layer=b.get("layer"),
                       bottleneck_size=b.get("size"), bottleneck_mode=str(b.get("mode", "mask")),
                       mask_seed=int(self.cfg.seed))
        except ValueError as err:
            raise ConfigError(f"model={m.name}: {err}") from None

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        s = self.settings
        if s.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=float(s.lr), momentum=float(s.get("momentum", 0.0)))
        if s.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=float(s.lr))
        raise ConfigError(f"model.settings optimizer={s.optimizer!r}: choose sgd or adam")

    def train_batches(self):
        order = torch.randperm(len(self.data.train_y), generator=self.generator).to(self.device)
        n = len(order) - len(order) % self.batch_size  # drop_last, as the paper's loader
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.data.train_x[idx], self.data.train_y[idx]

    def batch_items(self, batch) -> tuple[int, str]:
        return len(batch[1]), "images"

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        out = {}
        for split in ("train", "val", "test"):
            x, y = getattr(self.data, f"{split}_x"), getattr(self.data, f"{split}_y")
            correct = sum((model(x[i:i + 4096]).argmax(-1) == y[i:i + 4096]).sum().item()
                          for i in range(0, len(y), 4096))
            out[f"{split}_acc"] = correct / len(y)
        model.train()
        return out

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
