"""The image task, its data readers, the bottleneck and the bottleneck figure."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from dfa_bench.data.images import load_images, read_cifar10, read_mnist
from dfa_bench.errors import DataError
from dfa_bench.models.mlp import MLP
from dfa_bench.runner import run
from dfa_bench.tables import main as tables_main


def test_digits_has_a_fixed_split_without_download(tmp_path):
    a, b = load_images("digits", tmp_path), load_images("digits", tmp_path)
    assert a.features == 64 and a.classes == 10
    assert len(a.train_y) + len(a.val_y) + len(a.test_y) == 1797
    torch.testing.assert_close(a.val_x, b.val_x)


def _write_cifar(folder, n=6):
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        with open(batches / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, n).tolist()}, f)


def test_cifar10_reader_on_files_of_its_format(tmp_path):
    _write_cifar(tmp_path)
    x, y, test_x, test_y = read_cifar10(tmp_path)
    assert x.shape == (30, 3072) and test_x.shape == (6, 3072) and y.dtype == np.int64
    assert abs(float(x.mean())) < 1.0  # normalised per channel
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch"):
        read_cifar10(tmp_path)


def test_mnist_reader_on_files_of_its_format(tmp_path):
    def idx(path, array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(path, "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())

    for split, n in (("train", 5), ("t10k", 3)):
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.arange(n * 784).reshape(n, 28, 28) % 256)
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    x, y, test_x, test_y = read_mnist(tmp_path)
    assert x.shape == (5, 784) and list(test_y) == [0, 1, 2]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="t10k-labels"):
        read_mnist(tmp_path)


def test_missing_cifar10_offline_is_one_clear_message(make_cfg, tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    (tmp_path / "data").mkdir()
    cfg = make_cfg("task=image", "dataset=cifar10", f"data_root={tmp_path / 'data'}", "task.epochs=1")
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        run(cfg, tmp_path / "run")


def test_mask_bottleneck_lets_only_the_masked_weights_learn():
    torch.manual_seed(0)
    model = MLP(10, 3, [50, 50, 50], bottleneck_layer=1, bottleneck_size=5, mask_seed=1)
    assert 0 < model.weight_mask.mean() < 0.3
    model(torch.randn(4, 10)).sum().backward()
    grad = model.layers[1].weight.grad
    assert torch.all(grad[model.weight_mask == 0] == 0) and grad.abs().sum() > 0
    narrow = MLP(10, 3, [50, 50, 50], bottleneck_layer=1, bottleneck_size=5, bottleneck_mode="width")
    assert narrow.layers[1].out_features == 5 and narrow.layers[2].in_features == 5
    with pytest.raises(ValueError, match="bottleneck size"):
        MLP(10, 3, [50, 50], bottleneck_layer=1, bottleneck_size=80)


def test_image_task_end_to_end_with_bottleneck_and_figures(make_cfg, tmp_path):
    """DFA with a bottleneck of 2 and of 50 units, 20 epochs: far above the shallow baseline.

    Test accuracy measured over seeds 0-2: DFA 0.69-0.77 (bottleneck 2), 0.74-0.78 (50); shallow 0.41-0.56;
    the smallest per-seed gap between DFA and shallow is 0.13.
    """
    base = ("experiment=bottleneck_digits", "task.epochs=20", "model.hidden=[50,50,50]")
    shallow = run(make_cfg(*base, "method=shallow", "model.bottleneck.size=2", "alignment.every=0"),
                  tmp_path / "shallow")["metrics"]["test_acc"]
    results = tmp_path / "results"
    for i, size in enumerate((2, 50)):
        cfg = make_cfg(*base, f"model.bottleneck.size={size}", "alignment.every=5")
        summary = run(cfg, results / f"run{i}")
        assert summary["status"] == "completed"
        acc = summary["metrics"]["test_acc"]
        assert acc > 0.6 and acc > shallow + 0.08, (acc, shallow)  # ten classes: chance is 0.1
        assert "align/sample_cos/points.1" in summary["alignment"]
        assert (results / f"run{i}" / "alignment.png").exists()
    assert tables_main(["--results", str(results)]) == 0
    assert (results / "figures" / "bottleneck-digits-mask.png").stat().st_size > 10_000
    assert (results / "figures" / "alignment-image-digits-mlp_bottleneck_mask_2-dfa.png").exists()
    table = (results / "tables" / "bottleneck.md").read_text()
    assert "cos layer 2" in table and "| digits" in table
    assert "bottleneck mask    2" in (results / "tables" / "image.md").read_text()


@pytest.mark.parametrize("override, message", [
    ("task.val_fraction=0", "val_fraction"), ("task.batch_size=100000", "batch_size"),
    ("model.bottleneck.size=8", "bottleneck.layer"), ("method.feedback.distribution=cauchy", "distribution"),
])
def test_bad_image_settings_are_one_clear_message(make_cfg, tmp_path, override, message):
    from dfa_bench.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        run(make_cfg("task=image", "task.epochs=1", override), tmp_path)


def test_a_corrupt_gzip_body_is_a_data_error(tmp_path):
    from dfa_bench.data.images import _read_idx

    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]) * 50))
    payload[20:40] = b"\xff" * 20
    path.write_bytes(bytes(payload))
    with pytest.raises(DataError, match="t10k-labels"):
        _read_idx(path)
