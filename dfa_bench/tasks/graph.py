"""Node classification on Planetoid citation graphs (Cora, CiteSeer, PubMed), the paper's Table 3.

Full batch, cross-entropy on the labelled training nodes, Adam; the reported number is the test
accuracy at the epoch of best validation accuracy (first such epoch), as the paper's code reports it.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dfa_bench import files
from dfa_bench.data import dataset_path, download_dir, fetch, source_fingerprint, staged
from dfa_bench.errors import ConfigError, DataError
from dfa_bench.tasks import method_settings

PLANETOID_FILES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
GRAPH_CACHE_VERSION = 1
log = logging.getLogger("dfa_bench")


def planetoid_raw_files(name: str) -> list[str]:
    return [f"ind.{name.lower()}.{ext}" for ext in PLANETOID_FILES]


def load_planetoid(name: str, data_root: Path, cache_root: Path):
    """The Planetoid graph `name` with row-normalized features, public split, and its number of classes.

    Raw files are read from <data_root>/planetoid/<name>/raw; when the data root has no such folder, from
    <cache_root>/downloads/planetoid/<name>/raw, downloaded there when absent and online. The graph PyG
    reads from them is cached as tensors in <cache_root>/planetoid/, keyed by the raw files' paths, sizes
    and modification times: a changed raw file is read again. The data root is never written.
    """
    import torch_geometric
    import torch_geometric.transforms as T
    from torch_geometric.data import Data

    raw = _planetoid_raw(name, data_root, cache_root)
    sources = [raw / f for f in planetoid_raw_files(name)]
    where = hashlib.sha1(str(raw.resolve()).encode()).hexdigest()[:8]
    folder = Path(cache_root) / "planetoid"
    key = source_fingerprint(sources, version=GRAPH_CACHE_VERSION, pyg=torch_geometric.__version__)
    target = folder / f"{name}-{where}-{key}.pt"
    tensors = _open_graph(target)
    if tensors is None:
        with files.build_lock(folder / f"{name}-{where}"):  # parallel sweep jobs: one builds, the others wait
            tensors = _open_graph(target)
            if tensors is None:
                tensors = _build_graph(name, raw, target)
    data = T.NormalizeFeatures()(Data(**tensors))
    return data, int(data.y.max()) + 1


def _planetoid_raw(name: str, data_root: Path, cache_root: Path) -> Path:
    """The folder holding the eight raw files: the data root's, else the download folder's."""
    own = dataset_path(data_root, "planetoid", name, "raw")
    expected = planetoid_raw_files(name)
    if own.is_dir():
        missing = [f for f in expected if not (own / f).is_file()]
        if missing:
            raise DataError(
                f"{name}: {', '.join(missing)} missing from {own}. Download "
                + ", ".join(f"{PLANETOID_URL}/{f}" for f in missing)
                + " into that folder."
            )
        return own
    downloads = download_dir(cache_root, "planetoid", name, "raw")
    if all((downloads / f).is_file() for f in expected):
        return downloads
    shutil.rmtree(downloads, ignore_errors=True)  # an incomplete download folder (made by hand): start over
    hint = f"copy {', '.join(expected)} from {PLANETOID_URL} into {own} by hand"
    with staged(downloads) as part:  # the folder appears once all eight files are there and readable
        part.mkdir()
        for f in expected:
            fetch(f"{PLANETOID_URL}/{f}", part / f, what=name, hint=hint)
        for f in expected:
            _check_raw_file(name, part, f, shown=f"{PLANETOID_URL}/{f}")
    return downloads


def _check_raw_file(name: str, raw: Path, file: str, shown: str | None = None) -> None:
    """Read one raw file as PyG does; a DataError naming it (or `shown`) when it is unreadable."""
    from torch_geometric.io.planetoid import read_file

    try:
        read_file(str(raw), name, file.split(".", 2)[2])
    except Exception as err:  # noqa: BLE001 - pickle, numpy and scipy raise many kinds
        raise DataError(f"{name}: could not read the raw files: {shown or raw / file} is corrupt or truncated "
                        f"({type(err).__name__}: {err}); replace it with a good copy of {PLANETOID_URL}/{file}") from None


def _build_graph(name: str, raw: Path, target: Path) -> dict:
    from torch_geometric.io.planetoid import read_planetoid_data

    for stale in target.parent.glob(f"{target.name.rsplit('-', 1)[0]}-*.pt"):  # older versions of these files
        if stale != target:
            stale.unlink(missing_ok=True)
    log.info("reading the Planetoid graph %s from %s into %s", name, raw, target)
    try:
        data = read_planetoid_data(str(raw), name)
    except Exception as err:  # noqa: BLE001
        for f in planetoid_raw_files(name):
            _check_raw_file(name, raw, f)  # names the unreadable file
        raise DataError(f"{name}: could not read the raw files in {raw} ({type(err).__name__}: {err}). "
                        f"Check them against their source ({PLANETOID_URL}).") from None
    tensors = {key: data[key] for key in GRAPH_KEYS}
    files.torch_save(target, tensors)
    return tensors


GRAPH_KEYS = ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask")


def _open_graph(target: Path) -> dict | None:
    """The cached tensors, or None when absent or unreadable (a corrupt cache is rebuilt)."""
    try:
        tensors = torch.load(target, map_location="cpu", weights_only=True)
        n = tensors["x"].shape[0]
        if set(tensors) != set(GRAPH_KEYS) or any(len(tensors[k]) != n for k in GRAPH_KEYS if k != "edge_index"):
            raise ValueError("unexpected tensors")
        return tensors
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - any unreadable cache means: rebuild
        log.warning("the graph cache %s is unreadable (%s); rebuilding it", target, err)
        return None


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


def random_split(num_nodes: int, split: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`random_<train>_<val>_<test>` (percentages, e.g. random_60_20_20, DFA-GNN's protocol): the nodes in a
    random order drawn from the seed, the first train% for training, the next val% for validation, the rest
    (test%) for testing. Not stratified by class."""
    parts = split.split("_")
    try:
        if parts[0] != "random" or len(parts) != 4:
            raise ValueError
        train, val, test = (int(p) for p in parts[1:])
        if train + val + test != 100 or min(train, val, test) <= 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"unknown split {split!r}: public, stratified_5fold or random_<train>_<val>_<test> "
                          "in percent summing to 100 (e.g. random_60_20_20)") from None
    order = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(int(seed)))
    n_train, n_val = round(num_nodes * train / 100), round(num_nodes * val / 100)
    masks = []
    for nodes in (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]):
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[nodes] = True
        masks.append(mask)
    return tuple(masks)


class NodeClassification:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.settings = method_settings(cfg)
        self.epochs, self.patience, self.grad_clip = int(cfg.task.epochs), None, None
        data, self.num_classes = load_planetoid(cfg.dataset.planetoid, Path(cfg.data_root), Path(cfg.cache_root))
        split = cfg.task.get("split") or cfg.model.get("split") or "public"
        if split == "stratified_5fold":
            data.train_mask, data.val_mask, data.test_mask = stratified_5fold(data.y, cfg.seed)
        elif split != "public":
            data.train_mask, data.val_mask, data.test_mask = random_split(data.num_nodes, split, cfg.seed)
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
        """Mean cross-entropy over the training nodes. A model whose output is already log-probabilities
        (`log_probabilities = True`, model=dna_as_run) gets the negative log-likelihood of them: the same
        loss and gradients, but the error at its output is dL/d(log p) = -onehot/n."""
        out = model(data.x, data.edge_index)
        loss = F.nll_loss if getattr(model, "log_probabilities", False) else F.cross_entropy
        return loss(out[data.train_mask], data.y[data.train_mask])

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
