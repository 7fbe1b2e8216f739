"""Click-through-rate prediction (the paper's Table 2): Criteo, or MovieLens as a second dataset.

Random 80/10/10 split drawn from the run's seed; BCE on the logit; Adam at the model's per-method
learning rate, or at `task.lr` where a study sets one (`experiment=recsys_lr`); after every epoch the
validation AUC decides early stopping (the paper's patience) and the reported epoch; test AUC and
log-loss at that epoch. For a model whose logit is a sum of named parts (`terms`, e.g. DeepFM's linear,
fm and deep), the test AUC of each part alone (`test_auc_only_<part>`) and of the logit without it
(`test_auc_without_<part>`), from the same forward pass. On generated teacher data (`dataset=ctr_teacher`,
`dfa_bench.data.teacher`), the test AUC of the teacher's true probabilities (`test_auc_teacher`, the
ceiling) and of its order-2 part (`test_auc_teacher_order2`, the most a linear + FM model can express).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dfa_bench.data import dataset_path
from dfa_bench.data.ctr import load_ctr
from dfa_bench.errors import ConfigError, DataError
from dfa_bench.tasks import method_settings


def auc_logloss(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """ROC AUC and log-loss (scikit-learn); AUC is NaN when only one class is present."""
    from sklearn.metrics import log_loss, roc_auc_score

    labels = np.asarray(labels, dtype=np.float64)
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    auc = roc_auc_score(labels, probs) if 0 < labels.sum() < len(labels) else float("nan")
    return float(auc), float(log_loss(labels, probs, labels=[0, 1]))


class _Batches(torch.utils.data.Dataset):
    """Whole batches gathered from the memory-mapped cache (sorted indices: sequential reads)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, batches: list[np.ndarray]) -> None:
        self.features, self.labels, self.batches = features, labels, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        idx = np.sort(self.batches[i])
        return (torch.from_numpy(np.ascontiguousarray(self.features[idx], dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(self.labels[idx])))


class ClickThroughRate:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.settings = method_settings(cfg)
        generated = cfg.dataset.get("generated")
        if generated:
            if generated != "teacher":
                raise ConfigError(f"dataset.generated={generated!r}: the generated CTR data set is 'teacher'")
            from dfa_bench.data.teacher import teacher_data

            folder = teacher_data(Path(cfg.cache_root), int(cfg.dataset.rows), int(cfg.dataset.teacher_seed))
            source = folder / "train.txt"
        else:
            source = dataset_path(cfg.data_root, cfg.dataset.file)
            if not source.is_file():
                raise DataError(f"{cfg.dataset.name}: {source} not found. {cfg.dataset.get('hint', '')}".strip())
        self.data = load_ctr(cfg.dataset.kind, source, Path(cfg.cache_root), int(cfg.dataset.get("min_threshold", 10)),
                             progress=bool(cfg.progress) and sys.stderr.isatty())
        rows = len(self.data.labels)
        if rows < 20:
            raise DataError(f"{source}: only {rows} usable rows")
        gen = torch.Generator().manual_seed(int(cfg.seed))
        perm = torch.randperm(rows, generator=gen).numpy()
        n_train, n_val = int(rows * cfg.task.split[0]), int(rows * cfg.task.split[1])
        self.train_idx, self.val_idx = perm[:n_train], perm[n_train : n_train + n_val]
        self.test_idx = perm[n_train + n_val :]
        self.references = {}
        if generated:
            test = np.sort(self.test_idx)
            labels = np.asarray(self.data.labels[test])
            for name, file in (("test_auc_teacher", "logits.npy"), ("test_auc_teacher_order2", "order2_logits.npy")):
                self.references[name] = auc_logloss(labels, _sigmoid(np.load(folder / file, mmap_mode="r")[test]))[0]
        self.epochs = int(cfg.task.epochs or self.settings.epochs)
        self.patience = int(self.settings.patience) if self.settings.get("patience") else None
        self.grad_clip = cfg.model.get("grad_clip")
        self.batch_size = int(cfg.task.batch_size or self.settings.batch)
        self.lr = float(cfg.task.get("lr") or self.settings.lr)
        self._gen = torch.Generator().manual_seed(int(cfg.seed) + 1)
        self._shard = (0, 1)

    def shard(self, rank: int, world: int) -> None:
        """Several processes: each takes every world-th row of every batch."""
        self._shard = (rank, world)

    def state_dict(self) -> dict:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._gen.set_state(state["generator"])

    def build_model(self) -> nn.Module:
        from dfa_bench.models.recsys import build_ctr_model

        return build_ctr_model(self.cfg.model, self.settings, self.data.field_dims)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.lr,
                                weight_decay=float(self.settings.get("weight_decay", 0.0)))

    def _loader(self, index: np.ndarray, batch_size: int):
        batches = [index[i : i + batch_size] for i in range(0, len(index), batch_size)]
        return torch.utils.data.DataLoader(
            _Batches(self.data.features, self.data.labels, batches), batch_size=None, shuffle=False,
            num_workers=int(self.cfg.task.workers), pin_memory=self.device.type == "cuda",
        )

    def train_batches(self):
        order = self.train_idx[torch.randperm(len(self.train_idx), generator=self._gen).numpy()]
        if len(order) % self.batch_size == 1:  # BatchNorm cannot train on a batch of one
            order = order[:-1]
        rank, world = self._shard
        for x, y in self._loader(order, self.batch_size):
            if world > 1:
                x, y = x[rank::world], y[rank::world]
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def batch_items(self, batch) -> tuple[int, str]:
        return int(batch[0].shape[0]), "samples"

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.binary_cross_entropy_with_logits(model(x), y)

    @torch.no_grad()
    def predict(self, model: nn.Module, index: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Labels and logits of the rows `index`: {"logit": ...}, and each named part of a model with `terms`."""
        model.eval()
        parts, labels = [], []
        for x, y in self._loader(index, int(self.cfg.task.eval_batch_size)):
            x = x.to(self.device)
            terms = model.terms(x) if hasattr(model, "terms") else {}
            logit = sum(terms.values()) if terms else model(x)
            parts.append({"logit": logit, **terms})
            labels.append(y.numpy())
        model.train()
        return np.concatenate(labels), {k: torch.cat([p[k] for p in parts]).float().cpu().numpy() for k in parts[0]}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out = {}
        for split, index in (("val", self.val_idx), ("test", self.test_idx)):
            labels, logits = self.predict(model, index)
            out[f"{split}_auc"], out[f"{split}_logloss"] = auc_logloss(labels, _sigmoid(logits["logit"]))
            terms = [k for k in logits if k != "logit"]
            if split == "test":
                out.update(self.references)
                for term in terms if len(terms) > 1 else ():
                    out[f"test_auc_only_{term}"] = auc_logloss(labels, _sigmoid(logits[term]))[0]
                    out[f"test_auc_without_{term}"] = auc_logloss(labels, _sigmoid(logits["logit"] - logits[term]))[0]
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # no overflow warning for large negative logits

    return expit(np.asarray(x, dtype=np.float64))
