"""Node classification on Planetoid citation graphs (Cora, CiteSeer, PubMed), the paper's Table 3.

Full batch, cross-entropy on the labelled training nodes, Adam; the reported number is the test
accuracy at the epoch of best validation accuracy (first such epoch), as the paper's code reports it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dfa_bench import files
from dfa_bench.errors import DataError
from dfa_bench.tasks import method_settings

PLANETOID_FILES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"


def planetoid_raw_files(name: str) -> list[str]:
    return [f"ind.{name.lower()}.{ext}" for ext in PLANETOID_FILES]


def load_planetoid(name: str, data_root: Path, cache_root: Path):
    """The Planetoid graph `name` with row-normalized features, public split.

    Raw files are read from <data_root>/planetoid/<name>/raw (downloaded there when absent and online);
    PyG's processed tensors go to <cache_root>/planetoid/<name>/processed, never into the data root.
    """
    raw = Path(data_root) / "planetoid" / name / "raw"
    work = Path(cache_root) / "planetoid" / name
    expected = planetoid_raw_files(name)
    if raw.is_dir():
        missing = [f for f in expected if not (raw / f).is_file()]
        if missing:
            raise DataError(
                f"{name}: {', '.join(missing)} missing from {raw}. Download "
                + ", ".join(f"{PLANETOID_URL}/{f}" for f in missing)
                + " into that folder."
            )
    else:
        try:
            raw.mkdir(parents=True)
        except OSError as err:
            raise DataError(f"{name}: no raw files at {raw} and it cannot be created for a download ({err})")
    work.mkdir(parents=True, exist_ok=True)
    with files.build_lock(work):  # parallel sweep jobs: one links and processes, the others wait
        link = work / "raw"
        if link.is_symlink() and link.resolve() != raw.resolve():
            link.unlink()
        if not link.exists():
            os.symlink(raw.resolve(), link, target_is_directory=True)
        return _load_processed(name, work, raw, expected)


def _load_processed(name: str, work: Path, raw: Path, expected: list[str]):
    from torch_geometric.datasets import Planetoid
    import torch_geometric.transforms as T

    def build():
        return Planetoid(str(work.parent), name, transform=T.NormalizeFeatures())

    try:
        try:
            dataset = build()
        except (FileNotFoundError, OSError) as err:
            if any(not (raw / f).is_file() for f in expected):  # the download failed
                raise DataError(
                    f"{name}: could not download the raw files into {raw} ({err}). Copy "
                    f"{', '.join(expected)} from {PLANETOID_URL} there by hand."
                ) from err
            raise
        except Exception:
            # A corrupt processed cache is rebuilt once from the raw files.
            shutil.rmtree(work / "processed", ignore_errors=True)
            dataset = build()
    except DataError:
        raise
    except Exception as err:
        raise DataError(
            f"{name}: could not read the raw files in {raw} ({type(err).__name__}: {err}). "
            f"Check them against the checksums of their source ({PLANETOID_URL})."
        ) from err
    return dataset[0], dataset.num_classes


def stratified_5fold(y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DNA experiment's split: fold 0 train, fold 1 validation, folds 2-4 test."""
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    parts = [torch.as_tensor(test) for _, test in folds.split(torch.zeros(len(y)), y.cpu().numpy())]
    masks = []
    for chosen in (parts[:1], parts[1:2], parts[2:]):
        mask = torch.zeros(len(y), dtype=torch.bool)
        mask[torch.cat(chosen)] = True
        masks.append(mask)
    return tuple(masks)


class NodeClassification:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.settings = method_settings(cfg)
        self.epochs, self.patience, self.grad_clip = int(cfg.task.epochs), None, None
        data, self.num_classes = load_planetoid(cfg.dataset.planetoid, Path(cfg.data_root), Path(cfg.cache_root))
        if cfg.model.get("split") == "stratified_5fold":
            data.train_mask, data.val_mask, data.test_mask = stratified_5fold(data.y, cfg.seed)
        self.data = data.to(device)

    def shard(self, rank: int, world: int) -> None:
        """Several processes: each trains on every world-th labelled node (exact when shards are equal)."""
        nodes = self.data.train_mask.nonzero().view(-1)[rank::world]
        self.data.train_mask = torch.zeros_like(self.data.train_mask)
        self.data.train_mask[nodes] = True

    def build_model(self) -> nn.Module:
        from dfa_bench.models.graph import build_graph_model

        return build_graph_model(self.cfg.model, self.settings, self.data.num_features, self.num_classes)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        decayed = list(model.weight_decay_parameters())
        ids = {id(p) for p in decayed}
        rest = [p for p in model.parameters() if id(p) not in ids]
        return torch.optim.Adam(
            [{"params": decayed, "weight_decay": float(self.settings.weight_decay)},
             {"params": rest, "weight_decay": 0.0}],
            lr=float(self.settings.lr),
        )

    def train_batches(self):
        yield self.data

    def batch_items(self, batch) -> tuple[int, str]:
        return int(batch.train_mask.sum()), "labelled nodes"

    def loss(self, model: nn.Module, data) -> torch.Tensor:
        out = model(data.x, data.edge_index)
        return F.cross_entropy(out[data.train_mask], data.y[data.train_mask])

    @torch.no_grad()
    def final_evaluation(self, model: nn.Module, out_dir: Path) -> dict[str, float]:
        """With task.tsne=true: a t-SNE of the hidden node representation, coloured by class (tsne.png)."""
        if not self.cfg.task.get("tsne") or not hasattr(model, "embed"):
            return {}
        from sklearn.manifold import TSNE

        from dfa_bench.plots import pyplot, save_figure

        model.eval()
        hidden = model.embed(self.data.x, self.data.edge_index).cpu().numpy()
        model.train()
        xy = TSNE(n_components=2, perplexity=20, init="pca", random_state=int(self.cfg.seed)).fit_transform(hidden)
        fig, ax = pyplot().subplots(figsize=(6, 6))
        ax.scatter(xy[:, 0], xy[:, 1], c=self.data.y.cpu().numpy(), cmap="tab10", s=4)
        ax.set_title(f"t-SNE of the hidden layer: {self.cfg.model.name} on {self.cfg.dataset.name}, "
                     f"{self.cfg.method.name}", fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
        save_figure(fig, Path(out_dir) / "tsne.png")
        return {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.eval()
        pred = model(self.data.x, self.data.edge_index).argmax(dim=-1)
        model.train()
        correct = pred == self.data.y
        return {
            f"{split}_acc": correct[getattr(self.data, f"{split}_mask")].float().mean().item()
            for split in ("train", "val", "test")
        }
