"""Load the DFA paper's published NeRF models (`pretrained-models/*_dfa.ckpt`) into `model=nerf_as_run`.

The authors' checkpoints (lightonai/dfa-scales-to-modern-deep-learning, `paper-experiments/neural-rendering/
pretrained-models/`; two of them in `<data root>/nerf/pretrained_dfa/`) are dicts with the keys `iter`,
`model_coarse_state_dict`, `model_fine_state_dict`, `optimizer_state_dict`, `loss` and `psnr`. The two
state dicts have the same tensors (read from the files; every published model alike):

    authors' name        shape           ours (NeRFMLP)    what it is
    layer1.weight        (128, 63)       trunk.0.weight    first trunk layer, on the encoded position
    layer1.bias          (128,)          trunk.0.bias
    layers_xyz.{i}.weight (128, 128)     trunk.{i+1}.weight  trunk layers 2..4 (i = 0, 1, 2), no skip
    layers_xyz.{i}.bias  (128,)          trunk.{i+1}.bias
    fc_alpha.weight      (1, 128)        sigma.weight      density
    fc_alpha.bias        (1,)            sigma.bias
    fc_feat.weight       (128, 128)      feature.weight    feature layer (ReLU in the authors' model)
    fc_feat.bias         (128,)          feature.bias
    layers_dir.0.weight  (64, 155)       view.weight       view layer on [feature (128), encoded direction (27)]
    layers_dir.0.bias    (64,)           view.bias
    fc_rgb.weight        (3, 64)         rgb.weight        colour
    fc_rgb.bias          (3,)            rgb.bias

84,548 parameters per network: a 4 x 128 trunk, encodings of 10 (position, 63 inputs) and 4 (direction, 27
inputs) frequencies with the raw input included, a 64-wide view layer. `conf/model/nerf_as_run.yaml` is that
architecture. The mapping is a table of name patterns (`NAME_MAP`) applied by `convert_state_dict`, and
the result is loaded with strict key and shape checking.

One thing besides the names: the authors' positional encoding interleaves per frequency,
[x, sin(2^0 x), cos(2^0 x), sin(2^1 x), cos(2^1 x), ...] (each term 3 wide), while ours
(`dfa_bench.models.nerf.positional_encoding`) is [x, sin(2^0 x), sin(2^1 x), ..., cos(2^0 x), cos(2^1 x), ...].
The input columns of the first trunk layer and the direction columns of the view layer are permuted
accordingly (`encoding_permutation`), which gives exactly the same function.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

# (authors' parameter name pattern, ours): `{i}` is a layer index; layers_xyz.{i} is our trunk.{i+1}.
NAME_MAP: tuple[tuple[str, str], ...] = (
    (r"layer1\.(weight|bias)", "trunk.0.{0}"),
    (r"layers_xyz\.(\d+)\.(weight|bias)", "trunk.{i+1}.{1}"),
    (r"fc_alpha\.(weight|bias)", "sigma.{0}"),
    (r"fc_feat\.(weight|bias)", "feature.{0}"),
    (r"layers_dir\.0\.(weight|bias)", "view.{0}"),
    (r"fc_rgb\.(weight|bias)", "rgb.{0}"),
)
NETWORKS = {"model_coarse_state_dict": "coarse", "model_fine_state_dict": "fine"}


def is_published(checkpoint: Mapping) -> bool:
    """Whether a loaded checkpoint is one of the authors' (it holds their coarse model's state dict)."""
    return isinstance(checkpoint, Mapping) and "model_coarse_state_dict" in checkpoint


def our_name(name: str) -> str:
    """Our NeRFMLP parameter name for one of the authors' (`NAME_MAP`); KeyError if it has none."""
    for pattern, target in NAME_MAP:
        match = re.fullmatch(pattern, name)
        if match:
            if "{i+1}" in target:
                return target.replace("{i+1}", str(int(match.group(1)) + 1)).format(*match.groups())
            return target.format(*match.groups())
    raise KeyError(f"{name!r} is not a parameter of the authors' NeRF model (DFAFlexibleNeRFModel)")


def encoding_permutation(frequencies: int) -> torch.Tensor:
    """perm with ours[:, j] = authors'[:, perm[j]] for the columns of an encoded 3-vector.

    Authors': x (0..2), then for frequency k: sin at 3 + 6k + c, cos at 6 + 6k + c. Ours: x, then all sines
    (3 + 3k + c), then all cosines (3 + 3F + 3k + c), c the coordinate.
    """
    sines = [3 + 6 * k + c for k in range(frequencies) for c in range(3)]
    cosines = [6 + 6 * k + c for k in range(frequencies) for c in range(3)]
    return torch.tensor([0, 1, 2, *sines, *cosines])


def architecture(state: Mapping[str, torch.Tensor]) -> dict:
    """The model settings one of the authors' state dicts implies, from its tensor shapes."""
    width, xyz_in = state["layer1.weight"].shape
    trunk = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"layers_xyz\.(\d+)\.weight", k)))
    skips = [i for i in trunk if tuple(state[f"layers_xyz.{i}.weight"].shape) != (width, width)]
    if skips:
        raise ValueError(f"layers_xyz.{skips[0]} has a skip connection, which nerf_as_run does not have")
    if any(k.startswith("layers_dir.") and not k.startswith("layers_dir.0.") for k in state):
        raise ValueError("the model has more than one view-direction layer, which nerf_as_run does not have")
    view_out, view_in = state["layers_dir.0.weight"].shape
    if (xyz_in - 3) % 6 or (view_in - width - 3) % 6:
        raise ValueError(f"encoded input widths {xyz_in} and {view_in - width} are not 3 + 6 x frequencies")
    return {"layers": 1 + len(trunk), "width": int(width), "skip": None, "xyz_frequencies": (xyz_in - 3) // 6,
            "dir_frequencies": (view_in - width - 3) // 6, "feature_relu": True, "view_width": int(view_out)}


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One network's state dict (coarse or fine) in our NeRFMLP's names and encoding order."""
    arch = architecture(state)
    out = {our_name(k): v.detach().clone().float() for k, v in state.items()}
    out["trunk.0.weight"] = out["trunk.0.weight"][:, encoding_permutation(arch["xyz_frequencies"])]
    width = arch["width"]
    view = out["view.weight"]
    out["view.weight"] = torch.cat([view[:, :width], view[:, width:][:, encoding_permutation(arch["dir_frequencies"])]], 1)
    return out


def convert_checkpoint(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """An authors' checkpoint as the state dict of our NeRF (`coarse.*` and `fine.*`)."""
    out = {}
    for key, prefix in NETWORKS.items():
        state = checkpoint.get(key)
        if state:
            out.update({f"{prefix}.{k}": v for k, v in convert_state_dict(state).items()})
    return out


def read_checkpoint(path: str | Path) -> dict:
    """torch.load of an authors' .ckpt (legacy format, saved from a GPU) on the CPU, tensors only."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def load_published(model: torch.nn.Module, checkpoint: Mapping) -> None:
    """Load an authors' checkpoint into our NeRF `model` with strict key and shape checks.

    Raises ValueError naming the difference when the model is not their architecture (use model=nerf_as_run).
    """
    converted = convert_checkpoint(checkpoint)
    ours = model.state_dict()
    missing = sorted(set(ours) - set(converted))
    unexpected = sorted(set(converted) - set(ours))
    shapes = [f"{k}: theirs {tuple(converted[k].shape)}, model {tuple(ours[k].shape)}"
              for k in sorted(set(ours) & set(converted)) if converted[k].shape != ours[k].shape]
    if missing or unexpected or shapes:
        raise ValueError("the published checkpoint does not fit this model (model=nerf_as_run is its architecture): "
                         + "; ".join(filter(None, [f"missing {missing}" if missing else "",
                                                   f"unexpected {unexpected}" if unexpected else "",
                                                   "shapes differ: " + ", ".join(shapes) if shapes else ""])))
    model.load_state_dict(converted, strict=True)
