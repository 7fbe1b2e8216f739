"""Bad data inputs: one clear DataError naming the file, and nothing written into the data root.

Covers a missing data root (every task), a truncated or changed Planetoid raw file (the graph cache is
keyed by its sources), failed downloads (MNIST, CIFAR-10, Planetoid: the network is simulated, never
used) and the `mode=sample` checkpoint message.
"""
import gzip
import hashlib
import io
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import dfa_bench.data as data_mod
from dfa_bench.data import images
from dfa_bench.errors import DataError
from dfa_bench.tasks import build_task
from dfa_bench.tasks.graph import PLANETOID_URL, load_planetoid, planetoid_raw_files
from tests.conftest import data_root, require

BIN = Path(sys.executable).parent


def _tree(folder: Path) -> list[str]:
    """Every path under `folder` (relative), or [] when it does not exist."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# -- a missing data root ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    ("task=gcn",), ("task=gae",), ("task=lm",), ("task=recsys", "dataset=criteo_sample"),
    ("task=recsys", "dataset=movielens100k"), ("task=image", "dataset=mnist"), ("task=image", "dataset=cifar10"),
], ids=lambda o: "-".join(v.split("=")[1] for v in o))
def test_missing_data_root_is_named_and_not_created(make_cfg, tmp_path, overrides):
    root, cache = tmp_path / "nonexistent", tmp_path / "cache"
    cfg = make_cfg(*overrides, f"data_root={root}", f"cache_root={cache}")
    with pytest.raises(DataError) as err:
        build_task(cfg, torch.device("cpu"))
    message = str(err.value)
    assert f"data root {root} does not exist" in message and "DFA_BENCH_DATA" in message
    assert "\n" not in message
    assert not root.exists() and not (cache / "downloads").exists()


def test_missing_data_root_through_the_cli(cli_env, tmp_path):
    root = tmp_path / "nonexistent"
    env = {**cli_env, "DFA_BENCH_DATA": str(root), "DFA_BENCH_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([str(BIN / "dfa-bench"), "task=gcn", f"hydra.run.dir={tmp_path / 'run'}"], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert f"data root {root} does not exist (set DFA_BENCH_DATA" in p.stderr + p.stdout
    assert "Traceback" not in p.stderr
    assert not root.exists()


def test_a_data_root_that_is_a_file_is_named(make_cfg, tmp_path):
    root = tmp_path / "data.txt"
    root.write_text("not a folder")
    with pytest.raises(DataError, match=r"data root .*data\.txt is not a folder \(set DFA_BENCH_DATA"):
        load_planetoid("Cora", root, tmp_path / "cache")


# -- Planetoid: truncated and changed raw files ----------------------------------------------------------
@pytest.fixture
def cora_root(tmp_path) -> Path:
    """A data root holding a writable copy of Cora's raw files."""
    source = require("planetoid", "Cora", "raw")
    root = tmp_path / "data"
    raw = root / "planetoid" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for name in planetoid_raw_files("Cora"):
        shutil.copyfile(source / name, raw / name)
    return root


def _graph_caches(cache: Path) -> list[Path]:
    return sorted((cache / "planetoid").glob("Cora-*.pt"))


def test_truncated_raw_file_is_named_then_a_good_copy_loads_again(cora_root, tmp_path):
    cache = tmp_path / "cache"
    good, _ = load_planetoid("Cora", cora_root, cache)  # cached from the good files
    allx = cora_root / "planetoid" / "Cora" / "raw" / "ind.cora.allx"
    allx.write_bytes(allx.read_bytes()[: allx.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        load_planetoid("Cora", cora_root, cache)  # the old tensors are not used
    message = str(err.value)
    assert str(allx) in message and "truncated" in message and f"{PLANETOID_URL}/ind.cora.allx" in message
    assert "\n" not in message

    with pytest.raises(DataError, match=str(allx)):  # a fresh cache names the file too, not a folder
        load_planetoid("Cora", cora_root, tmp_path / "fresh-cache")

    shutil.copyfile(require("planetoid", "Cora", "raw", "ind.cora.allx"), allx)  # restored: a new mtime
    again, classes = load_planetoid("Cora", cora_root, cache)
    assert classes == 7 and torch.equal(again.x, good.x) and torch.equal(again.edge_index, good.edge_index)
    assert len(_graph_caches(cache)) == 1


def test_changed_raw_file_rebuilds_the_graph_cache(cora_root, tmp_path):
    cache = tmp_path / "cache"
    first, _ = load_planetoid("Cora", cora_root, cache)
    [built] = _graph_caches(cache)
    stamp = built.stat().st_mtime_ns
    load_planetoid("Cora", cora_root, cache)
    assert built.stat().st_mtime_ns == stamp  # unchanged sources: the cache is reused

    y_path = cora_root / "planetoid" / "Cora" / "raw" / "ind.cora.ally"  # the labels of the first nodes
    with open(y_path, "rb") as f:
        y = pickle.load(f, encoding="latin1")
    old = int(y[0].argmax())
    y[0] = np.roll(y[0], 1)  # the first training node changes class
    with open(y_path, "wb") as f:
        pickle.dump(y, f)
    changed, _ = load_planetoid("Cora", cora_root, cache)
    assert int(first.y[0]) == old and int(changed.y[0]) == (old + 1) % 7
    [rebuilt] = _graph_caches(cache)
    assert rebuilt != built and not built.exists()  # a new cache; the stale one is removed

    rebuilt.write_bytes(b"garbage")  # a corrupt cache is rebuilt, not an error
    assert torch.equal(load_planetoid("Cora", cora_root, cache)[0].y, changed.y)


def test_pubmed_without_allx_names_the_file_and_its_url(tmp_path):
    raw = require("planetoid", "PubMed", "raw")
    if (raw / "ind.pubmed.allx").exists():
        pytest.skip("this data root has PubMed's ind.pubmed.allx")
    with pytest.raises(DataError, match=rf"ind\.pubmed\.allx missing from {raw}\. Download "
                                        rf"{PLANETOID_URL}/ind\.pubmed\.allx"):
        load_planetoid("PubMed", data_root(), tmp_path / "cache")
    assert not (tmp_path / "cache" / "downloads").exists()


# -- downloads: only into the cache, only when complete ---------------------------------------------------
class _Network:
    """Stands in for `dfa_bench.data.open_url`: serves `pages` ({url: bytes}); `fail_after` bytes of the
    `broken` URL are sent before the connection drops; any other URL is offline."""

    def __init__(self, pages=None, broken=None, fail_after=0):
        self.pages, self.broken, self.fail_after, self.asked = pages or {}, broken, fail_after, []

    def __call__(self, url, timeout=60):
        self.asked.append(url)
        if url == self.broken:
            return _Dropping(self.pages[url][: self.fail_after])
        if url not in self.pages:
            raise OSError("Network is unreachable")
        return io.BytesIO(self.pages[url])


class _Dropping(io.BytesIO):
    def read(self, size=-1):
        out = super().read(size)
        if not out:
            raise ConnectionResetError("connection reset by peer")
        return out


def _idx_gz(array: np.ndarray) -> bytes:
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def _fake_mnist(n=20) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {}
    for split in ("train", "t10k"):
        out[f"{split}-images-idx3-ubyte.gz"] = _idx_gz(rng.integers(0, 256, (n, 28, 28)))
        out[f"{split}-labels-idx1-ubyte.gz"] = _idx_gz(np.arange(n) % 10)
    return out


def _serve_mnist(monkeypatch, **network):
    fake = _fake_mnist()
    monkeypatch.setattr(images, "MNIST_FILES", {k: hashlib.md5(v).hexdigest() for k, v in fake.items()})
    net = _Network({f"{images.MNIST_URL}/{k}": v for k, v in fake.items()}, **network)
    monkeypatch.setattr(data_mod, "open_url", net)
    return net


def test_mnist_download_goes_to_the_cache_not_the_data_root(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    net = _serve_mnist(monkeypatch)
    data = images.load_images("mnist", root, cache_root=cache)
    assert data.classes == 10 and data.features == 784
    assert _tree(root) == []
    assert _tree(cache / "downloads") == ["mnist", *(f"mnist/{f}" for f in sorted(images.MNIST_FILES))]
    images.load_images("mnist", root, cache_root=cache)  # the second time: from the cache, no download
    assert len(net.asked) == 4


@pytest.mark.parametrize("failure", ["offline", "dropped", "checksum"])
def test_failed_mnist_download_leaves_nothing_behind(tmp_path, monkeypatch, failure):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    net = _serve_mnist(monkeypatch)
    first = f"{images.MNIST_URL}/train-images-idx3-ubyte.gz"
    if failure == "offline":
        net.pages = {}
    elif failure == "dropped":
        net.broken, net.fail_after = first, 1000
    else:
        net.pages[first] = b"an error page, not the file"
    with pytest.raises(DataError) as err:
        images.load_images("mnist", root, cache_root=cache)
    message = str(err.value)
    assert first in message and str(root / "mnist") in message and "dataset=digits" in message
    assert "\n" not in message
    assert _tree(root) == [] and _tree(cache) == []  # no folder in the data root, no partial file in the cache


def _fake_cifar_archive(n=4) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            body = pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                 b"labels": (np.arange(n) % 10).tolist()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def test_cifar10_download_is_extracted_into_the_cache(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    archive = _fake_cifar_archive()
    monkeypatch.setattr(images, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(data_mod, "open_url", _Network({images.CIFAR10_URL: archive}))
    data = images.load_images("cifar10", root, val_fraction=0.25, cache_root=cache)
    assert data.features == 3072 and len(data.test_y) == 4
    assert _tree(root) == []
    batches = sorted(images.CIFAR10_BATCHES)
    assert _tree(cache / "downloads") == ["cifar10", "cifar10/cifar-10-batches-py",
                                          *(f"cifar10/cifar-10-batches-py/{b}" for b in batches)]


@pytest.mark.parametrize("failure", ["offline", "dropped", "not-cifar"])
def test_failed_cifar10_download_leaves_nothing_behind(tmp_path, monkeypatch, failure):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    archive = _fake_cifar_archive()
    if failure == "not-cifar":  # a verified download that does not hold the batches
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("README")
            tar.addfile(info, io.BytesIO(b""))
        archive = buffer.getvalue()
    monkeypatch.setattr(images, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    net = _Network({} if failure == "offline" else {images.CIFAR10_URL: archive},
                   broken=images.CIFAR10_URL if failure == "dropped" else None, fail_after=100)
    monkeypatch.setattr(data_mod, "open_url", net)
    with pytest.raises(DataError, match="cifar-10") as err:
        images.load_images("cifar10", root, cache_root=cache)
    assert images.CIFAR10_URL in str(err.value)
    assert _tree(root) == [] and _tree(cache) == []


def test_cifar10_offline_through_the_task_leaves_no_folder_in_the_data_root(make_cfg, tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    monkeypatch.setattr(data_mod, "open_url", _Network())
    cfg = make_cfg("task=image", "dataset=cifar10", f"data_root={root}", f"cache_root={cache}")
    with pytest.raises(DataError, match=r"CIFAR-10: the download from .*cifar-10-python\.tar\.gz failed"):
        build_task(cfg, torch.device("cpu"))
    assert _tree(root) == [] and _tree(cache) == []


def _planetoid_pages() -> dict[str, bytes]:
    raw = require("planetoid", "Cora", "raw")
    return {f"{PLANETOID_URL}/{name}": (raw / name).read_bytes() for name in planetoid_raw_files("Cora")}


def test_planetoid_download_goes_to_the_cache(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    monkeypatch.setattr(data_mod, "open_url", _Network(_planetoid_pages()))
    data, classes = load_planetoid("Cora", root, cache)
    assert (data.num_nodes, classes) == (2708, 7)
    assert _tree(root) == []
    assert sorted(p.name for p in (cache / "downloads" / "planetoid" / "Cora" / "raw").iterdir()) == sorted(
        planetoid_raw_files("Cora"))


@pytest.mark.parametrize("failure", ["offline", "dropped", "corrupt"])
def test_failed_planetoid_download_leaves_nothing_behind(tmp_path, monkeypatch, failure):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    pages = _planetoid_pages()
    allx = f"{PLANETOID_URL}/ind.cora.allx"
    if failure == "offline":
        pages = {}
    elif failure == "corrupt":
        pages[allx] = pages[allx][:5000]
    net = _Network(pages, broken=allx if failure == "dropped" else None, fail_after=5000)
    monkeypatch.setattr(data_mod, "open_url", net)
    with pytest.raises(DataError, match=r"Cora: .*ind\.cora\.") as err:
        load_planetoid("Cora", root, cache)
    message = str(err.value)
    assert str(root / "planetoid" / "Cora" / "raw") in message or failure == "corrupt"
    if failure != "offline":
        assert allx in message
    assert _tree(root) == []
    assert not (cache / "downloads").exists() and not list(cache.rglob("*.part"))


# -- mode=sample: the checkpoint the user gave ---------------------------------------------------------
def test_sample_names_the_checkpoint_that_does_not_exist(cli_env, tmp_path):
    nope = tmp_path / "nope"
    p = subprocess.run([str(BIN / "dfa-bench"), "task=lm", "mode=sample", f"checkpoint={nope}",
                        f"hydra.run.dir={tmp_path / 'sample'}"], env=cli_env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    out = p.stderr + p.stdout
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"checkpoint={nope} does not exist" in out
    assert "run directory" in out and "checkpoint.pt" in out
    assert str(tmp_path / "checkpoint.pt") not in out


def test_sample_says_what_a_checkpoint_must_be(make_cfg, tmp_path):
    from dfa_bench.tasks.lm import LanguageModelling

    other = tmp_path / "model.bin"
    other.write_bytes(b"")
    with pytest.raises(DataError, match=rf"checkpoint={other} is neither a directory nor a file named "
                                        r"checkpoint\.pt; expected a finished task=lm run directory"):
        LanguageModelling.sample(make_cfg("task=lm", "mode=sample", f"checkpoint={other}"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"")
    for given in (run_dir, run_dir / "checkpoint.pt"):
        with pytest.raises(DataError, match=rf"checkpoint={given}: config\.yaml, tokenizer\.json not found in "
                                            rf"{run_dir}; expected"):
            LanguageModelling.sample(make_cfg("task=lm", "mode=sample", f"checkpoint={given}"))


def test_staged_write_leaves_no_folder_when_the_block_fails(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    with pytest.raises(RuntimeError):
        with data_mod.staged(target) as part:
            part.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert _tree(tmp_path) == []
    with data_mod.staged(target) as part:
        part.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and _tree(tmp_path) == ["a", "a/b", "a/b/file.bin"]
