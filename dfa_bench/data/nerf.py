"""NeRF scenes and rays: Blender synthetic (`nerf_synthetic/<scene>`) and LLFF real (`nerf_llff_data/<scene>`).

The geometry follows the NeRF paper's conventions (Mildenhall et al. 2020): OpenGL camera-to-world
matrices, rays through pixel corners, LLFF poses re-axed to [right, up, back], rescaled so the nearest
depth bound is 1/0.75 and recentred on the average pose, and LLFF rays mapped to normalized device
coordinates (near plane 1). Written here from those formulas.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfa_bench.errors import DataError

log = logging.getLogger("dfa_bench")


@dataclass
class Views:
    images: torch.Tensor  # (N, H, W, 3) float in [0, 1]
    poses: torch.Tensor  # (N, 4, 4) camera to world
    height: int
    width: int
    focal: float
    names: list[str]


@dataclass
class Scene:
    train: Views | None  # None: a split the caller did not ask for (`splits=`)
    val: Views | None
    test: Views | None
    near: float
    far: float
    ndc: bool
    white_background: bool


def _read_png(path: Path, size: tuple[int, int] | None, white_background: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BOX)
            rgba = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return rgb * alpha + (1.0 - alpha) if white_background else rgb


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None


SPLITS = ("train", "val", "test")


def load_blender(folder: Path, downscale: int = 1, white_background: bool = True, testskip: int = 8,
                 near: float = 2.0, far: float = 6.0, splits: tuple[str, ...] = SPLITS) -> Scene:
    """transforms_{train,val,test}.json and their PNGs; frames whose PNG is absent are skipped (logged).

    Only the views of `splits` are read (the others are None): evaluating a model needs only the test views.
    Rays are sampled between `near` and `far` (NeRF's 2 and 6 for the synthetic scenes).
    """
    if not folder.is_dir():
        raise DataError(f"{folder} not found (a nerf_synthetic scene folder with transforms_*.json)")
    loaded: dict[str, Views | None] = dict.fromkeys(SPLITS)
    for split in splits:
        meta_path = folder / f"transforms_{split}.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise DataError(f"{meta_path} not found") from None
        except json.JSONDecodeError as err:
            raise DataError(f"{meta_path}: not valid JSON ({err})") from None
        frames = meta["frames"] if split == "train" else meta["frames"][::testskip]
        present = [f for f in frames if (folder / (f["file_path"] + ".png")).is_file()]
        if len(present) < len(frames):
            log.info("%s/%s: %d of %d frames have no PNG and are skipped", folder.name, split,
                     len(frames) - len(present), len(frames))
        if not present:
            raise DataError(f"{folder}: no {split} image found")
        full_w, full_h = _image_size(folder / (present[0]["file_path"] + ".png"))
        w, h = full_w // downscale, full_h // downscale
        images = np.stack([_read_png(folder / (f["file_path"] + ".png"), (w, h), white_background) for f in present])
        poses = np.stack([np.array(f["transform_matrix"], dtype=np.float32) for f in present])
        focal = 0.5 * w / np.tan(0.5 * float(meta["camera_angle_x"]))
        loaded[split] = Views(torch.from_numpy(images), torch.from_numpy(poses), h, w, float(focal),
                              [f["file_path"] for f in present])
    return Scene(loaded["train"], loaded["val"], loaded["test"], near=float(near), far=float(far), ndc=False,
                 white_background=white_background)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _look_at(z: np.ndarray, up: np.ndarray, position: np.ndarray) -> np.ndarray:
    z = _normalize(z)
    x = _normalize(np.cross(up, z))
    y = _normalize(np.cross(z, x))
    return np.stack([x, y, z, position], axis=1)  # 3 x 4


def average_pose(poses: np.ndarray) -> np.ndarray:
    """The mean camera: mean centre, summed viewing and up directions (3 x 4)."""
    return _look_at(poses[:, :3, 2].sum(0), poses[:, :3, 1].sum(0), poses[:, :3, 3].mean(0))


def load_llff(folder: Path, factor: int = 4, llffhold: int = 8, bd_factor: float = 0.75, downscale: int = 1,
              ndc: bool = True, near: float | None = None, far: float | None = None,
              splits: tuple[str, ...] = SPLITS) -> Scene:
    """poses_bounds.npy and images_<factor>/; every `llffhold`-th view is held out for test (and val).

    `downscale` shrinks the images_<factor> images further (for CPU-sized runs). With `ndc` (NeRF's choice
    for forward-facing scenes) rays are sampled in normalized device coordinates, by default between 0
    and 1 there; without it, by default between 0.9 x the nearest and the farthest depth bound (as NeRF's
    code does). Only the images of `splits` are read (the poses of all views are always used).
    """
    pb_path = folder / "poses_bounds.npy"
    if not pb_path.is_file():
        raise DataError(f"{pb_path} not found (an LLFF scene folder with poses_bounds.npy and images_{factor}/)")
    try:
        pb = np.load(pb_path)
    except (OSError, ValueError) as err:
        raise DataError(f"{pb_path}: unreadable ({err})") from None
    if pb.ndim != 2 or pb.shape[1] != 17:
        raise DataError(f"{pb_path}: expected an (N, 17) array, got {pb.shape}")
    image_dir = folder / f"images_{factor}"
    paths = sorted(p for p in image_dir.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(paths) != len(pb):
        raise DataError(f"{image_dir}: {len(paths)} images for {len(pb)} poses in {pb_path}")
    poses = pb[:, :15].reshape(-1, 3, 5).astype(np.float64)
    bounds = pb[:, 15:].astype(np.float64)
    full_h, full_w, full_focal = poses[0, :, 4]
    # LLFF stores [down, right, back]; NeRF uses [right, up, back].
    poses = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:4]], axis=2)
    scale = 1.0 / (bounds.min() * bd_factor)
    poses[:, :, 3] *= scale
    bounds = bounds * scale
    centre = np.vstack([average_pose(poses), [0, 0, 0, 1]])
    homogeneous = np.concatenate([poses, np.tile([[[0, 0, 0, 1.0]]], (len(poses), 1, 1))], axis=1)
    poses = (np.linalg.inv(centre) @ homogeneous).astype(np.float32)
    w, h = _image_size(paths[0])
    if abs(h - full_h / factor) > 1 or abs(w - full_w / factor) > 1:
        raise DataError(f"{image_dir}: images are {w}x{h}, expected about {full_w / factor:.0f}x{full_h / factor:.0f}")
    w, h = w // downscale, h // downscale
    focal = float(full_focal) / factor * w / (full_w / factor)
    test_ids = set(range(0, len(paths), llffhold))
    names = [p.name for p in paths]

    def views(ids):
        ids = sorted(ids)
        images = np.stack([_read_png(paths[i], (w, h), False) for i in ids])
        return Views(torch.from_numpy(images), torch.from_numpy(poses[ids]), h, w, focal, [names[i] for i in ids])

    held = views(test_ids) if "test" in splits or "val" in splits else None
    train = views(set(range(len(paths))) - test_ids) if "train" in splits else None
    if ndc:
        near, far = 0.0 if near is None else near, 1.0 if far is None else far
    else:
        near = float(bounds.min()) * 0.9 if near is None else near
        far = float(bounds.max()) if far is None else far
    return Scene(train, held if "val" in splits else None, held if "test" in splits else None,
                 near=float(near), far=float(far), ndc=ndc, white_background=False)


def pixel_rays(height: int, width: int, focal: float, pose: torch.Tensor, ys: torch.Tensor,
               xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and directions (n x 3) of the rays through pixels (ys, xs) of a camera (pose: 4 x 4)."""
    dirs = torch.stack([(xs - width * 0.5) / focal, -(ys - height * 0.5) / focal, -torch.ones_like(xs)], -1)
    d = dirs @ pose[:3, :3].T
    return pose[:3, 3].expand_as(d), d


def image_rays(height: int, width: int, focal: float, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=pose.device),
                            torch.arange(width, dtype=torch.float32, device=pose.device), indexing="ij")
    return pixel_rays(height, width, focal, pose, ys.reshape(-1), xs.reshape(-1))


def ndc_rays(height: int, width: int, focal: float, near: float, o: torch.Tensor,
             d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map rays to normalized device coordinates (forward-facing scenes); origins moved to the near plane."""
    t = -(near + o[:, 2]) / d[:, 2]
    o = o + t[:, None] * d
    ax, ay = -2.0 * focal / width, -2.0 * focal / height
    o_ndc = torch.stack([ax * o[:, 0] / o[:, 2], ay * o[:, 1] / o[:, 2], 1.0 + 2.0 * near / o[:, 2]], -1)
    d_ndc = torch.stack([ax * (d[:, 0] / d[:, 2] - o[:, 0] / o[:, 2]),
                         ay * (d[:, 1] / d[:, 2] - o[:, 1] / o[:, 2]),
                         -2.0 * near / o[:, 2]], -1)
    return o_ndc, d_ndc
