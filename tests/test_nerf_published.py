"""The paper's published NeRF models: their architecture (model=nerf_as_run), the converter, mode=eval."""
import json
import math

import pytest
import torch

from dfa_bench import nerf_published as published
from dfa_bench.errors import ConfigError
from dfa_bench.marks import ErrorPoint, FeedbackPoint
from dfa_bench.models.nerf import NeRFMLP
from dfa_bench.tasks.nerf import ViewSynthesis, _pixel_subset, build_nerf
from tests.conftest import data_root, require

PRETRAINED = ("nerf", "pretrained_dfa")
FERN = ("nerf", "nerf_llff_data", "fern")
# The tensors of every published model (coarse and fine alike), as read from the .ckpt files.
PUBLISHED_SHAPES = {
    "layer1.weight": (128, 63), "layer1.bias": (128,),
    "layers_xyz.0.weight": (128, 128), "layers_xyz.0.bias": (128,),
    "layers_xyz.1.weight": (128, 128), "layers_xyz.1.bias": (128,),
    "layers_xyz.2.weight": (128, 128), "layers_xyz.2.bias": (128,),
    "fc_alpha.weight": (1, 128), "fc_alpha.bias": (1,),
    "fc_feat.weight": (128, 128), "fc_feat.bias": (128,),
    "layers_dir.0.weight": (64, 155), "layers_dir.0.bias": (64,),
    "fc_rgb.weight": (3, 64), "fc_rgb.bias": (3,),
}


def _authors_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.3 for k, shape in PUBLISHED_SHAPES.items()}


def _authors_forward(state, xyz, dirs):
    """The authors' network as NOTES §3.1 describes it, written here independently of our model."""

    def encode(x, frequencies):  # interleaved per frequency: x, sin(2^0 x), cos(2^0 x), sin(2^1 x), ...
        terms = [x]
        for k in range(frequencies):
            terms += [torch.sin(2.0**k * x), torch.cos(2.0**k * x)]
        return torch.cat(terms, -1)

    def lin(name, x):
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    h = torch.relu(lin("layer1", encode(xyz, 10)))
    for i in range(3):
        h = torch.relu(lin(f"layers_xyz.{i}", h))
    alpha = lin("fc_alpha", h)
    feat = torch.relu(lin("fc_feat", h))
    v = torch.relu(lin("layers_dir.0", torch.cat([feat, encode(dirs, 4)], -1)))
    return torch.cat([lin("fc_rgb", v), alpha], -1)


def _nerf_as_run(make_cfg):
    return build_nerf(make_cfg("task=nerf", "model=nerf_as_run").model)


def test_the_name_table_covers_every_published_tensor():
    ours = {published.our_name(k) for k in PUBLISHED_SHAPES}
    assert ours == {f"trunk.{i}.{p}" for i in range(4) for p in ("weight", "bias")} | {
        f"{m}.{p}" for m in ("sigma", "feature", "view", "rgb") for p in ("weight", "bias")}
    assert published.our_name("layers_xyz.2.bias") == "trunk.3.bias"
    with pytest.raises(KeyError):
        published.our_name("layers_dir.1.weight")


def test_converted_weights_compute_the_authors_function():
    state = _authors_state()
    mlp = NeRFMLP(layers=4, width=128, skip=None, feature_relu=True)
    mlp.load_state_dict(published.convert_state_dict(state), strict=True)
    g = torch.Generator().manual_seed(1)
    xyz = torch.randn(50, 3, generator=g)
    dirs = torch.nn.functional.normalize(torch.randn(50, 3, generator=g), dim=-1)
    torch.testing.assert_close(mlp(xyz, dirs), _authors_forward(state, xyz, dirs), rtol=1e-4, atol=1e-4)


def test_nerf_as_run_is_the_published_architecture(make_cfg):
    model = _nerf_as_run(make_cfg)
    for net in (model.coarse, model.fine):
        assert sum(p.numel() for p in net.parameters()) == 84_548
        points = [n for n, m in net.named_modules() if isinstance(m, FeedbackPoint)]
        # one per trunk layer output, the feature layer (after its ReLU) and the view layer, as the authors' DFA
        assert points == ["trunk_points.0", "trunk_points.1", "trunk_points.2", "trunk_points.3",
                          "feature_point", "view_point"]
        assert isinstance(net.raw, ErrorPoint)
    published.load_published(model, {"model_coarse_state_dict": _authors_state(0),
                                     "model_fine_state_dict": _authors_state(1)})
    assert published.architecture(_authors_state()) == {
        "layers": 4, "width": 128, "skip": None, "xyz_frequencies": 10, "dir_frequencies": 4,
        "feature_relu": True, "view_width": 64}
    with pytest.raises(ValueError, match="nerf_as_run"):  # the intended NeRF is another architecture
        published.load_published(build_nerf(make_cfg("task=nerf", "model=nerf").model),
                                 {"model_coarse_state_dict": _authors_state()})


def test_the_published_checkpoints_load_strictly(make_cfg):
    folder = require(*PRETRAINED)
    for name in ("synth_lego_dfa.ckpt", "real_fern_dfa.ckpt"):
        ckpt = published.read_checkpoint(folder / name)
        assert published.is_published(ckpt)
        for key in ("model_coarse_state_dict", "model_fine_state_dict"):
            assert {k: tuple(v.shape) for k, v in ckpt[key].items()} == PUBLISHED_SHAPES
        published.load_published(_nerf_as_run(make_cfg), ckpt)


def test_pixel_subsets_depend_on_the_view_and_seed_only():
    a = _pixel_subset(3, 40, 50, 100, seed=0)
    assert torch.equal(a, _pixel_subset(3, 40, 50, 100, seed=0)) and len(a.unique()) == 100
    assert not torch.equal(a, _pixel_subset(4, 40, 50, 100, seed=0))
    assert not torch.equal(a, _pixel_subset(3, 40, 50, 100, seed=1))
    assert torch.equal(_pixel_subset(0, 4, 5, None, seed=0), torch.arange(20))


def test_eval_of_the_published_fern_model_on_a_pixel_subset(make_cfg, tmp_path, capsys):
    ckpt = require(*PRETRAINED, "real_fern_dfa.ckpt")
    require(*FERN)
    cfg = make_cfg("task=nerf", "scene=fern", "mode=eval", f"checkpoint={ckpt}", "task.eval_pixels=40",
                   f"task.eval_out={tmp_path}")
    r = ViewSynthesis.evaluate_checkpoint(cfg)
    assert r["kind"] == "published" and r["model"] == "nerf_as_run" and r["views"] == 3
    assert r["pixels_per_view"] == 40 and r["ndc"] and not r["white_background"]
    # the converted model renders fern (wrongly ordered encoding columns give about 7 dB, no feature ReLU 11)
    assert r["psnr"] > 17.0 and 0 < r["psnr_se"] < 2.0 and "ssim" not in r
    out = tmp_path / "eval-fern-real_fern_dfa-px40.json"
    saved = json.loads(out.read_text())
    assert saved["psnr"] == pytest.approx(r["psnr"]) and len(saved["per_view"]) == 3
    assert "PSNR" in capsys.readouterr().out.strip().splitlines()[-1]
    again = ViewSynthesis.evaluate_checkpoint(cfg)  # deterministic: no jitter, no noise, the same pixels
    assert again["psnr"] == r["psnr"]
    with pytest.raises(ConfigError, match="data root"):
        ViewSynthesis.evaluate_checkpoint(make_cfg("task=nerf", "scene=fern", f"checkpoint={ckpt}",
                                                   "task.eval_pixels=4", f"task.eval_out={data_root()}"))


def test_eval_of_a_run_matches_its_final_evaluation(make_cfg, tmp_path):
    require(*FERN)
    cfg = make_cfg("experiment=nerf_tiny", "scene=fern", "method=bp")  # fern at 50 x 37: 20 small images
    task = ViewSynthesis(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    model = task.build_model()
    from omegaconf import OmegaConf

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"model": model.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True)},
               run_dir / "checkpoint.pt")
    final = task.final_evaluation(model, run_dir)
    r = ViewSynthesis.evaluate_checkpoint(make_cfg("task=nerf", "mode=eval", f"checkpoint={run_dir}"))
    assert r["kind"] == "run" and r["scene"] == "fern" and r["image_size"] == [37, 50] and r["views"] == 3
    assert r["psnr_view_mean"] == pytest.approx(final["test_psnr"], abs=1e-3)  # the same renders
    assert r["ssim"] == pytest.approx(final["test_ssim"], abs=1e-3)
    assert r["psnr_se"] == 0.0 and math.isfinite(r["psnr_se_views"])  # whole images: no pixel-sampling error
    assert (run_dir / "eval-test-full.json").is_file()
