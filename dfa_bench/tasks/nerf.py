"""Neural view synthesis with NeRF (the paper's Table 1 and A.5): test PSNR and SSIM of rendered views.

Training samples random rays from all training views; a coarse network is evaluated at `samples`
stratified depths and a fine network at those plus `importance` depths drawn from the coarse weights;
the loss is the sum of both renderings' MSE. Adam with lr_t = lr * 0.1^(t / (lr_decay * 1000)). Every
`eval_every` iterations (an "epoch" of the runner) the first `val_views` validation views are rendered;
at the end every test view is rendered (in chunks of `chunk` rays), scored, and saved as PNG with a
side-by-side comparison to the ground truth in <run dir>/renders/.

`ViewSynthesis.evaluate_checkpoint` (`mode=eval checkpoint=...`) scores a finished run or one of the paper's
published models (`dfa_bench.nerf_published`) on the test views, whole or on a seeded pixel subset
(`task.eval_pixels`), deterministically.
"""
from __future__ import annotations

import logging
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dfa_bench import files
from dfa_bench import nerf_published as published
from dfa_bench.data.nerf import Scene, Views, image_rays, load_blender, load_llff, ndc_rays, pixel_rays
from dfa_bench import session
from dfa_bench.errors import ConfigError, DataError
from dfa_bench.tasks import method_settings

log = logging.getLogger("dfa_bench")


def psnr(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


def stratified_depths(near: float, far: float, rays: int, samples: int, perturb: bool, device) -> torch.Tensor:
    t = torch.linspace(0.0, 1.0, samples, device=device)
    z = (near * (1.0 - t) + far * t).expand(rays, samples)
    if perturb:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        upper = torch.cat([mids, z[:, -1:]], -1)
        lower = torch.cat([z[:, :1], mids], -1)
        z = lower + (upper - lower) * torch.rand_like(z)
    return z


def composite(raw: torch.Tensor, z: torch.Tensor, directions: torch.Tensor, white_background: bool,
              noise_std: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Volume rendering of raw (rays, samples, 4) at depths z: (rgb per ray, weights per sample)."""
    deltas = torch.cat([z[:, 1:] - z[:, :-1], torch.full_like(z[:, :1], 1e10)], -1)
    deltas = deltas * directions.norm(dim=-1, keepdim=True)
    sigma_raw = raw[..., 3]
    if noise_std > 0:
        sigma_raw = sigma_raw + torch.randn_like(sigma_raw) * noise_std
    alpha = 1.0 - torch.exp(-F.relu(sigma_raw) * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = alpha * transmittance
    rgb = (weights[..., None] * torch.sigmoid(raw[..., :3])).sum(1)
    if white_background:
        rgb = rgb + (1.0 - weights.sum(-1, keepdim=True))
    return rgb, weights


def importance_depths(bins: torch.Tensor, weights: torch.Tensor, samples: int, deterministic: bool) -> torch.Tensor:
    """Inverse-transform sampling of `samples` depths from the piecewise-constant pdf of `weights` on `bins`."""
    weights = weights + 1e-5
    cdf = torch.cumsum(weights / weights.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, samples, device=bins.device).expand(cdf.shape[0], samples).contiguous()
    else:
        u = torch.rand(cdf.shape[0], samples, device=bins.device)
    idx = torch.searchsorted(cdf, u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = torch.where(cdf_hi - cdf_lo < 1e-5, torch.ones_like(cdf_lo), cdf_hi - cdf_lo)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


def render_rays(model: nn.Module, o: torch.Tensor, d: torch.Tensor, viewdirs: torch.Tensor, near: float, far: float,
                white_background: bool, samples: int, importance: int, training: bool, noise_std: float = 0.0,
                bf16: bool = False, dual: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Coarse and fine RGB (n x 3) of a batch of rays (o, d: after NDC when the scene uses it).

    Training: stratified jitter of the coarse depths, random importance samples, `noise_std` added to the raw
    density. Otherwise everything is deterministic: evenly spaced coarse depths, importance samples at evenly
    spaced quantiles, no noise. `dual` (evaluation only): the paper's "NeRF-Dual", the fine rendering uses the
    mean of the coarse and the fine network's raw outputs at the fine sample positions.
    """
    n = o.shape[0]
    z = stratified_depths(near, far, n, samples, training, o.device)

    def raw_at(network, z):
        points = o[:, None, :] + d[:, None, :] * z[..., None]
        dirs = viewdirs[:, None, :].expand_as(points)
        with torch.autocast(o.device.type, dtype=torch.bfloat16, enabled=bf16):
            raw = network(points.reshape(-1, 3), dirs.reshape(-1, 3))
        return raw.float().reshape(n, z.shape[1], 4)

    rgb_coarse, weights = composite(raw_at(model.coarse, z), z, d, white_background, noise_std)
    if model.fine is None or importance == 0:
        return rgb_coarse, None
    mids = 0.5 * (z[:, 1:] + z[:, :-1])
    extra = importance_depths(mids, weights[:, 1:-1].detach(), importance, deterministic=not training)
    z_fine, _ = torch.sort(torch.cat([z, extra.detach()], -1), -1)
    raw = raw_at(model.fine, z_fine)
    if dual:
        raw = 0.5 * (raw + raw_at(model.coarse, z_fine))
    rgb_fine, _ = composite(raw, z_fine, d, white_background, noise_std)
    return rgb_coarse, rgb_fine


def load_scene(sc: DictConfig, data_root: str | Path, splits: tuple[str, ...] = ("train", "val", "test")) -> Scene:
    """The scene a `conf/scene/*.yaml` describes (only the views of `splits` are read)."""
    folder = Path(data_root) / sc.folder
    near, far = sc.get("near"), sc.get("far")
    if sc.kind == "blender":
        return load_blender(folder, int(sc.downscale), bool(sc.white_background), int(sc.testskip),
                            near=2.0 if near is None else float(near), far=6.0 if far is None else float(far),
                            splits=splits)
    if sc.kind == "llff":
        return load_llff(folder, int(sc.factor), int(sc.llffhold), downscale=int(sc.get("downscale", 1)),
                         ndc=bool(sc.get("ndc", True)), near=near, far=far, splits=splits)
    raise ConfigError(f"scene kind {sc.kind!r}: choose blender or llff")


def build_nerf(m: DictConfig) -> nn.Module:
    """The coarse and fine networks a `conf/model/nerf*.yaml` describes."""
    from dfa_bench.models.nerf import NeRF

    return NeRF(int(m.layers), int(m.width), m.skip, int(m.xyz_frequencies), int(m.dir_frequencies),
                fine=int(m.importance) > 0, feature_relu=bool(m.get("feature_relu", False)))


def prepare_rays(scene: Scene, views: Views, o: torch.Tensor, d: torch.Tensor):
    """(o, d, unit view directions): view directions from the world-space rays, then NDC if the scene uses it."""
    viewdirs = d / d.norm(dim=-1, keepdim=True)
    if scene.ndc:
        o, d = ndc_rays(views.height, views.width, views.focal, 1.0, o, d)
    return o, d, viewdirs


class ViewSynthesis:
    selection_mode = "max"

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        sc = cfg.dataset
        self.scene: Scene = load_scene(sc, cfg.data_root)
        key = cfg.method.name if cfg.method.name in sc.settings else cfg.method.tuning
        self.settings = OmegaConf.create({**OmegaConf.to_container(method_settings(cfg)),
                                          **OmegaConf.to_container(sc.settings.get(key, {}))})
        t = cfg.task
        self.iterations = int(t.iterations or sc.iterations)
        self.eval_every = min(int(t.eval_every), self.iterations)
        self.epochs = self.iterations // self.eval_every
        self.patience, self.grad_clip = None, None
        self.rays = int(t.rays or sc.rays)
        self.chunk = int(t.chunk)
        self.bf16 = session.precision(cfg, device) == "bf16"
        self.train_images = self.scene.train.images.to(device)
        self.train_poses = self.scene.train.poses.to(device)
        self.step_scheduler = None

    # -- rays and rendering ------------------------------------------------------------------------
    def _prepare(self, views: Views, o: torch.Tensor, d: torch.Tensor):
        return prepare_rays(self.scene, views, o, d)

    def render(self, model: nn.Module, o: torch.Tensor, d: torch.Tensor, viewdirs: torch.Tensor,
               training: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Coarse and fine RGB (n x 3) of a batch of rays."""
        m = self.cfg.model
        noise = float(self.cfg.dataset.raw_noise_std) if training else 0.0
        return render_rays(model, o, d, viewdirs, self.scene.near, self.scene.far, self.scene.white_background,
                           int(m.samples), int(m.importance), training, noise, self.bf16)

    @torch.no_grad()
    def render_view(self, model: nn.Module, views: Views, i: int) -> torch.Tensor:
        """A whole view (H x W x 3), rendered in chunks of rays."""
        model.eval()
        o, d = image_rays(views.height, views.width, views.focal, views.poses[i].to(self.device))
        o, d, viewdirs = self._prepare(views, o, d)
        out = []
        for s in range(0, o.shape[0], self.chunk):
            coarse, fine = self.render(model, o[s : s + self.chunk], d[s : s + self.chunk],
                                       viewdirs[s : s + self.chunk], training=False)
            out.append(fine if fine is not None else coarse)
        model.train()
        return torch.cat(out).reshape(views.height, views.width, 3).clamp(0, 1)

    # -- the task interface ------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return build_nerf(self.cfg.model)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        fused = {"fused": True} if self.device.type == "cuda" else {}
        opt = torch.optim.Adam(model.parameters(), lr=float(self.settings.lr), **fused)
        decay = float(self.cfg.dataset.lr_decay) * 1000
        self.step_scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.1 ** (step / decay))
        return opt

    def train_batches(self):
        views = self.scene.train
        n_views = self.train_images.shape[0]
        for _ in range(self.eval_every):
            img = torch.randint(0, n_views, (self.rays,), device=self.device)
            ys = torch.randint(0, views.height, (self.rays,), device=self.device)
            xs = torch.randint(0, views.width, (self.rays,), device=self.device)
            poses = self.train_poses[img]
            dirs = torch.stack([(xs - views.width * 0.5) / views.focal, -(ys - views.height * 0.5) / views.focal,
                                -torch.ones(self.rays, device=self.device)], -1)
            d = (poses[:, :3, :3] @ dirs[..., None]).squeeze(-1)
            o = poses[:, :3, 3]
            o, d, viewdirs = self._prepare(views, o, d)
            yield o, d, viewdirs, self.train_images[img, ys, xs]

    def batch_items(self, batch) -> tuple[int, str]:
        return int(batch[0].shape[0]), "rays"

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        o, d, viewdirs, target = batch
        coarse, fine = self.render(model, o, d, viewdirs, training=True)
        loss = F.mse_loss(coarse, target)
        return loss + F.mse_loss(fine, target) if fine is not None else loss

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        views = self.scene.val
        mses = [F.mse_loss(self.render_view(model, views, i), views.images[i].to(self.device)).item()
                for i in range(min(int(self.cfg.task.val_views), len(views.names)))]
        return {"val_psnr": psnr(float(np.mean(mses)))}

    def final_evaluation(self, model: nn.Module, out_dir: Path) -> dict[str, float]:
        """Render every test view: PSNR (mean over views, as the paper's test script), SSIM, PNGs."""
        from PIL import Image
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim

        views = self.scene.test
        renders = Path(out_dir) / "renders"
        renders.mkdir(parents=True, exist_ok=True)
        psnrs, ssims = [], []
        for i in range(len(views.names)):
            pred = self.render_view(model, views, i)
            truth = views.images[i].to(self.device)
            psnrs.append(psnr(F.mse_loss(pred, truth).item()))
            ssims.append(ssim(pred.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None], data_range=1.0).item())
            image = (pred.cpu().numpy() * 255).round().astype(np.uint8)
            truth_8 = (truth.cpu().numpy() * 255).round().astype(np.uint8)
            Image.fromarray(image).save(renders / f"test_{i:03d}.png")
            Image.fromarray(np.concatenate([truth_8, image], axis=1)).save(renders / f"test_{i:03d}_truth_vs_render.png")
        return {"test_psnr": float(np.mean(psnrs)), "test_ssim": float(np.mean(ssims)), "test_views": len(psnrs)}

    # -- mode=eval: a checkpoint on the test views ---------------------------------------------------
    @staticmethod
    def evaluate_checkpoint(cfg: DictConfig) -> dict:
        """`mode=eval checkpoint=<path>`: PSNR (and SSIM on full images) of a model on the scene's test views.

        `checkpoint` is one of the paper's published models (an authors' .ckpt, recognised by its keys; it
        is evaluated with `model=nerf_as_run`, its architecture, on the scene given by `scene=`), or one of
        our runs (its directory or its checkpoint.pt; evaluated with the run's own model and scene config).
        Rendering is deterministic: evenly spaced coarse depths, importance samples at evenly spaced
        quantiles, no radiance noise, in float32. The test views: lego's test frames present (`testskip`),
        an LLFF scene's hold-out (every `llffhold`-th image). See `evaluate_views` for the metrics. Prints
        one line and writes a JSON file (see `_eval_out`); returns the results.
        """
        from dfa_bench.session import resolve_device

        if not cfg.get("checkpoint"):
            raise ConfigError("mode=eval needs checkpoint=<a run directory, its checkpoint.pt, or a published .ckpt>")
        path = Path(str(cfg.checkpoint))
        ckpt_file = path / "checkpoint.pt" if path.is_dir() else path
        if not ckpt_file.is_file():
            raise DataError(f"{ckpt_file} not found: checkpoint= takes a run directory, its checkpoint.pt, "
                            "or a published .ckpt")
        ckpt = _read_checkpoint(ckpt_file)
        t = cfg.task
        if published.is_published(ckpt):
            kind, scene_cfg = "published", cfg.dataset
            model_cfg = cfg.model if cfg.model.name == "nerf_as_run" else OmegaConf.load(NERF_AS_RUN)
            if cfg.model.name != "nerf_as_run":
                log.info("a published checkpoint: evaluated with model=nerf_as_run (its architecture)")
            if str(scene_cfg.name) not in ckpt_file.name:
                log.warning("%s does not name scene %r: is scene= the checkpoint's scene?", ckpt_file.name,
                            str(scene_cfg.name))
            model = build_nerf(model_cfg)
            try:
                published.load_published(model, ckpt)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        elif isinstance(ckpt, dict) and "model" in ckpt and "config" in ckpt:
            kind = "run"
            run_cfg = OmegaConf.create(ckpt["config"])
            if run_cfg.task.name != "nerf":
                raise ConfigError(f"{ckpt_file} is a task={run_cfg.task.name} run, not a NeRF one")
            model_cfg, scene_cfg = run_cfg.model, run_cfg.dataset
            if str(cfg.dataset.name) != str(scene_cfg.name):
                log.warning("scene=%s ignored: the run was trained on %s, which is evaluated", cfg.dataset.name,
                            scene_cfg.name)
            model = build_nerf(model_cfg)
            model.load_state_dict(ckpt["model"], strict=True)
        else:
            raise DataError(f"{ckpt_file} is neither a dfa-bench run's checkpoint nor a published NeRF .ckpt")

        out = _eval_out(cfg, kind, ckpt_file, str(scene_cfg.name))
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        device = resolve_device(str(cfg.device))
        scene = load_scene(scene_cfg, cfg.data_root, splits=("test",))
        pixels = None if t.get("eval_pixels") is None else int(t.eval_pixels)
        results = evaluate_views(model.to(device).eval(), scene, int(model_cfg.samples), int(model_cfg.importance),
                                 pixels=pixels, pixel_seed=int(t.get("eval_seed") or 0), chunk=int(t.chunk),
                                 dual=bool(t.get("eval_dual", False)))
        results = {"checkpoint": str(ckpt_file.resolve()), "kind": kind, "scene": str(scene_cfg.name),
                   "model": str(model_cfg.name), "near": scene.near, "far": scene.far, "ndc": scene.ndc,
                   "white_background": scene.white_background, "samples": int(model_cfg.samples),
                   "importance": int(model_cfg.importance), "device": str(device), **results}
        if kind == "published":
            results["published_iter"] = int(ckpt.get("iter", -1))
            results["published_last_batch_psnr"] = float(ckpt.get("psnr", float("nan")))
        files.write_json(out, results)
        results["out"] = str(out)
        ssim_text = f"  SSIM {results['ssim']:.4f}" if "ssim" in results else ""
        line = (f"nerf eval {results['scene']} {kind} {ckpt_file.name}: PSNR {results['psnr']:.2f} dB "
                f"(SE {results['psnr_se']:.2f} pixel sampling, {results['psnr_se_views']:.2f} over views){ssim_text}  "
                f"coarse {results['psnr_coarse']:.2f}  mean of per-view PSNR {results['psnr_view_mean']:.2f}  "
                f"[{results['views']} views x {results['pixels_per_view']} px{', dual' if results['dual'] else ''}] "
                f"-> {out}")
        sys.stdout.write(line + "\n")
        return results


NERF_AS_RUN = Path(__file__).resolve().parents[2] / "conf" / "model" / "nerf_as_run.yaml"
SE_METHOD = (
    "psnr_se: pixel-sampling standard error, the delta method on the pooled MSE: the views are strata, the "
    "pixels of each drawn uniformly without replacement, Var(MSE) = sum_v (1 - n_v/N_v) s_v^2 / n_v / V^2 "
    "(s_v^2 the sample variance of view v's per-pixel squared errors, each averaged over the 3 channels), "
    "SE(PSNR) = 10 / ln 10 * SE(MSE) / MSE: the error of the subset's PSNR against the full images' on these "
    "views (0 on full images). psnr_se_views: over views, the delta method on the mean of the V per-view "
    "MSEs, sd(MSE_v) / sqrt(V), the spread a different set of test views would bring."
)


def _read_checkpoint(path: Path):
    """A published .ckpt loads with weights_only; our checkpoint.pt (optimizer, RNG states) needs the full unpickler."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        raise DataError(f"{path} is unreadable ({type(err).__name__}: {err})") from None


def _eval_out(cfg: DictConfig, kind: str, ckpt_file: Path, scene: str) -> Path:
    """Where mode=eval writes its JSON: `task.eval_out` (a .json file, or a folder), else the run's
    directory for our runs and outputs/eval/nerf/ for a published .ckpt. Never inside the data root."""
    t = cfg.task
    tag = "full" if t.get("eval_pixels") is None else f"px{int(t.eval_pixels)}"
    if int(t.get("eval_seed") or 0):
        tag += f"-seed{int(t.eval_seed)}"
    if t.get("eval_dual"):
        tag += "-dual"
    name = f"eval-test-{tag}.json" if kind == "run" else f"eval-{scene}-{ckpt_file.stem}-{tag}.json"
    given = t.get("eval_out")
    if given:
        out = Path(str(given))
        out = out if out.suffix == ".json" else out / name
    else:
        out = ckpt_file.parent / name if kind == "run" else Path("outputs") / "eval" / "nerf" / name
    root = Path(str(cfg.data_root)).resolve()
    if out.resolve() == root or root in out.resolve().parents:
        raise ConfigError(f"mode=eval would write {out} inside the data root {root}: set task.eval_out elsewhere")
    return out


def _pixel_subset(view_index: int, height: int, width: int, pixels: int | None, seed: int) -> torch.Tensor:
    """Flat pixel indices of one test view: all of them, or `pixels` drawn without replacement by a generator
    seeded by (seed, view index) only, so every model evaluated on the scene gets the same pixels."""
    if pixels is None or pixels >= height * width:
        return torch.arange(height * width)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + view_index)
    return torch.randperm(height * width, generator=gen)[:pixels].sort().values


@torch.no_grad()
def evaluate_views(model: nn.Module, scene: Scene, samples: int, importance: int, pixels: int | None = None,
                   pixel_seed: int = 0, chunk: int = 4096, dual: bool = False) -> dict:
    """Deterministic renders of the scene's test views (all pixels, or `pixels` seeded ones per view).

    psnr: from the pooled squared error over all views, pixels and channels (equal pixels per view and equal
    view sizes make it the mean of the per-view MSEs), with two standard errors (`SE_METHOD`). Also the
    coarse network's PSNR, the mean of per-view PSNRs (the paper's test script averages those), per-view
    results, and SSIM (torchmetrics, mean over views) when whole images are rendered.
    """
    views = scene.test
    device = next(model.parameters()).device
    per_view, fine_err, coarse_err = [], [], []
    ssims = []
    for i in range(len(views.names)):
        h, w = views.height, views.width
        idx = _pixel_subset(i, h, w, pixels, pixel_seed)
        ys, xs = (idx // w).float(), (idx % w).float()
        o, d = pixel_rays(h, w, views.focal, views.poses[i], ys, xs)
        o, d, viewdirs = prepare_rays(scene, views, o.to(device), d.to(device))
        fine, coarse = [], []
        for s in range(0, o.shape[0], chunk):
            c, f = render_rays(model, o[s : s + chunk], d[s : s + chunk], viewdirs[s : s + chunk], scene.near,
                               scene.far, scene.white_background, samples, importance, training=False, dual=dual)
            coarse.append(c.clamp(0, 1).cpu())
            fine.append((f if f is not None else c).clamp(0, 1).cpu())
        pred, pred_coarse = torch.cat(fine).double(), torch.cat(coarse).double()
        truth = views.images[i].reshape(-1, 3)[idx].double()
        err = ((pred - truth) ** 2).mean(-1)  # per pixel, over the channels
        fine_err.append(err)
        coarse_err.append(((pred_coarse - truth) ** 2).mean(-1))
        per_view.append({"name": views.names[i], "mse": err.mean().item(), "psnr": psnr(err.mean().item()),
                         "psnr_coarse": psnr(coarse_err[-1].mean().item())})
        if pixels is None or pixels >= h * w:
            from torchmetrics.functional.image import structural_similarity_index_measure as ssim

            image, target = pred.float().reshape(h, w, 3), views.images[i].float()
            ssims.append(ssim(image.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None], data_range=1.0).item())
            per_view[-1]["ssim"] = ssims[-1]
    n_views = len(fine_err)
    view_mse = np.array([e.mean().item() for e in fine_err])
    mse = float(view_mse.mean())
    total = views.height * views.width
    var_mse = sum((1 - len(e) / total) * (e.var(unbiased=True).item() if len(e) > 1 else 0.0) / len(e)
                  for e in fine_err) / n_views**2
    db = 10.0 / math.log(10.0)
    se_views = db * float(view_mse.std(ddof=1)) / math.sqrt(n_views) / mse if n_views > 1 else float("nan")
    result = {
        "psnr": psnr(mse), "psnr_se": db * math.sqrt(var_mse) / mse, "psnr_se_views": se_views, "mse": mse,
        "psnr_coarse": psnr(float(np.mean([e.mean().item() for e in coarse_err]))),
        "psnr_view_mean": float(np.mean([v["psnr"] for v in per_view])),
        "views": n_views, "pixels_per_view": len(fine_err[0]), "image_size": [views.height, views.width],
        "eval_pixels": pixels, "eval_seed": pixel_seed, "dual": dual, "se_method": SE_METHOD,
        "per_view": per_view,
    }
    if ssims:
        result["ssim"] = float(np.mean(ssims))
    return result
