"""Image classification sets for the MLP experiments of the companion paper (arXiv 1906.04554).

- `digits`: scikit-learn's copy of the UCI handwritten digits (1,797 images of 8x8 pixels, 10 classes),
  shipped inside scikit-learn: it needs no download, so tests and CPU runs use it.
- `mnist`: the idx files (`train-images-idx3-ubyte.gz`, ...) in <data_root>/mnist/.
- `cifar10`: the python batches (`cifar-10-batches-py/`) in <data_root>/cifar10/, normalised per channel
  with the paper code's mean and std.

MNIST and CIFAR-10 are read from the data root when there; otherwise from <cache_root>/downloads/mnist/
and <cache_root>/downloads/cifar10/, downloaded there from their canonical addresses (checked against
their MD5) when absent and the machine is online. The data root is never written; a failed download
leaves nothing behind and says what to put where. Every set is returned flattened to
vectors as float32 tensors, with a fixed validation split carved from the training set (the same for
every seed), so the test set is only used for reporting.
"""
from __future__ import annotations

import gzip
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfa_bench.data import dataset_path, download_dir, fetch, staged
from dfa_bench.errors import DataError

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist"  # the mirror torchvision reads (LeCun's site is often down)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # principled-dfa-training


@dataclass
class ImageSet:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int

    @property
    def features(self) -> int:
        return self.train_x.shape[1]


def load_images(name: str, data_root: Path, val_fraction: float = 0.1, cache_root: Path | None = None) -> ImageSet:
    """The set `name` (digits | mnist | cifar10), flattened, with a fixed validation split.

    MNIST and CIFAR-10 need `cache_root` when they are absent from the data root (it holds downloads)."""
    if name == "digits":
        x, y, test_x, test_y = _digits()
    elif name == "mnist":
        x, y, test_x, test_y = read_mnist(_fetch_mnist(data_root, cache_root))
    elif name == "cifar10":
        x, y, test_x, test_y = read_cifar10(_fetch_cifar10(data_root, cache_root))
    else:
        raise DataError(f"unknown image dataset {name!r}; choose digits, mnist or cifar10")
    n_val = int(round(len(x) * val_fraction))
    order = np.random.default_rng(12345).permutation(len(x))  # fixed: the split is part of the dataset
    val, train = order[:n_val], order[n_val:]
    t = lambda a, dtype=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
    return ImageSet(t(x[train]), t(y[train], torch.long), t(x[val]), t(y[val], torch.long),
                    t(test_x), t(test_y, torch.long), int(y.max()) + 1)


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float32) / 16.0
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))  # a fixed 80/20 train/test split
    x, y = x[order], y[order]
    n_test = len(x) // 5
    mean, std = x[n_test:].mean(), x[n_test:].std()
    x = (x - mean) / std
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


# -- MNIST -------------------------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is not a readable gzip file ({err}); delete it and download it again") from None
    magic = int.from_bytes(raw[:4], "big")
    dims = magic & 0xFF
    if magic >> 8 != 0x08 or not 1 <= dims <= 3:
        raise DataError(f"{path} is not an idx file of unsigned bytes (magic {magic:#x})")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: {body.size} values for shape {shape}")
    return body.reshape(shape)


def read_mnist(folder: Path | dict[str, Path]):
    """The four idx files of `folder`, or of a {file name: path} mapping (files from several folders)."""
    where = folder if isinstance(folder, dict) else {name: Path(folder) / name for name in MNIST_FILES}
    images = {split: _read_idx(where[f"{split}-images-idx3-ubyte.gz"]) for split in ("train", "t10k")}
    labels = {split: _read_idx(where[f"{split}-labels-idx1-ubyte.gz"]) for split in ("train", "t10k")}
    norm = lambda a: ((a.reshape(len(a), -1).astype(np.float32) / 255.0) - 0.1307) / 0.3081  # noqa: E731
    return norm(images["train"]), labels["train"].astype(np.int64), norm(images["t10k"]), labels["t10k"].astype(np.int64)


def _fetch_mnist(data_root: Path, cache_root: Path | None) -> dict[str, Path]:
    """Each idx file from <data_root>/mnist/, else from the download folder (downloaded there if absent)."""
    own = dataset_path(data_root, "mnist")
    where = {}
    for name, md5 in MNIST_FILES.items():
        if (own / name).is_file():
            where[name] = own / name
            continue
        downloads = _downloads(cache_root, "mnist", own, name)
        if not (downloads / name).is_file():
            with staged(downloads / name) as part:
                fetch(f"{MNIST_URL}/{name}", part, md5, what="MNIST",
                      hint=f"put {', '.join(MNIST_FILES)} into {own} by hand, or use dataset=digits (no download)")
        where[name] = downloads / name
    return where


def _downloads(cache_root: Path | None, name: str, own: Path, needed: str) -> Path:
    if cache_root is None:
        raise DataError(f"{own / needed} not found and no cache root to download into; put it there by hand")
    return download_dir(cache_root, name)


# -- CIFAR-10 ----------------------------------------------------------------------------------------
def read_cifar10(folder: Path):
    """The five training batches and the test batch of the python version, normalised per channel."""
    batches = folder / "cifar-10-batches-py"

    def read(name: str):
        path = batches / name
        try:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            data, labels = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, EOFError, KeyError) as err:
            raise DataError(f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataError(f"{path}: expected N x 3072 bytes and N labels, got {data.shape} and {len(labels)}")
        x = data.reshape(-1, 3, 1024).astype(np.float32) / 255.0
        x = (x - np.array(CIFAR10_MEAN, np.float32)[:, None]) / np.array(CIFAR10_STD, np.float32)[:, None]
        return x.reshape(len(x), -1), labels

    train = [read(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = read("test_batch")
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_x, test_y


CIFAR10_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _fetch_cifar10(data_root: Path, cache_root: Path | None) -> Path:
    """The folder holding cifar-10-batches-py/: in the data root, else in the download folder, where the
    archive is downloaded and extracted (both staged: the batches appear only once all six are there)."""
    own = dataset_path(data_root, "cifar10")
    if (own / "cifar-10-batches-py" / "test_batch").is_file():
        return own
    downloads = _downloads(cache_root, "cifar10", own, "cifar-10-batches-py")
    batches = downloads / "cifar-10-batches-py"
    if (batches / "test_batch").is_file():
        return downloads
    hint = (f"put cifar-10-python.tar.gz ({CIFAR10_URL}), or the cifar-10-batches-py folder it holds, into {own} "
            "by hand, or use dataset=digits (no download)")
    archive = own / "cifar-10-python.tar.gz"  # an archive put in the data root is extracted into the cache
    with staged(batches) as part:
        part.mkdir()
        source = archive if archive.is_file() else part / ".cifar-10-python.tar.gz"
        if source != archive:
            fetch(CIFAR10_URL, source, CIFAR10_MD5, what="CIFAR-10", hint=hint)
        _extract_batches(source if source == archive else CIFAR10_URL, source, part)
        if source != archive:
            source.unlink()  # only the batches are kept
    return downloads


def _extract_batches(origin, archive: Path, part: Path) -> None:
    """The six batch files of `archive` (from `origin`) into the existing folder `part`."""
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 2 and parts[0] == "cifar-10-batches-py" and member.isfile():
                    with tar.extractfile(member) as f:
                        (part / parts[1]).write_bytes(f.read())
    except (OSError, EOFError, zlib.error, tarfile.TarError) as err:
        raise DataError(f"CIFAR-10: {origin} could not be extracted ({err}); replace it with a good copy of "
                        f"{CIFAR10_URL}") from None
    missing = [name for name in CIFAR10_BATCHES if not (part / name).is_file()]
    if missing:
        raise DataError(f"CIFAR-10: {origin} does not hold cifar-10-batches-py/{', '.join(missing)}; "
                        "it is not the python version of CIFAR-10")
