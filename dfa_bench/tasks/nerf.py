"""Neural view synthesis with NeRF (the paper's Table 1 and A.5): test PSNR and SSIM of rendered views.

Training samples random rays from all training views; a coarse network is evaluated at `samples`
stratified depths and a fine network at those plus `importance` depths drawn from the coarse weights;
the loss is the sum of both renderings' MSE. Adam with lr_t = lr * 0.1^(t / (lr_decay * 1000)). Every
`eval_every` iterations (an "epoch" of the runner) the first `val_views` validation views are rendered;
at the end every test view is rendered (in chunks of `chunk` rays), scored, and saved as PNG with a
side-by-side comparison to the ground truth in <run dir>/renders/.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dfa_bench.data.nerf import Scene, Views, image_rays, load_blender, load_llff, ndc_rays
from dfa_bench.errors import ConfigError
from dfa_bench.tasks import method_settings


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


class ViewSynthesis:
    selection_mode = "max"

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        sc = cfg.dataset
        folder = Path(cfg.data_root) / sc.folder
        if sc.kind == "blender":
            self.scene: Scene = load_blender(folder, int(sc.downscale), bool(sc.white_background), int(sc.testskip))
        elif sc.kind == "llff":
            self.scene = load_llff(folder, int(sc.factor), int(sc.llffhold), downscale=int(sc.get("downscale", 1)))
        else:
            raise ConfigError(f"scene kind {sc.kind!r}: choose blender or llff")
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
        self.bf16 = device.type == "cuda" and t.precision == "bf16"
        self.train_images = self.scene.train.images.to(device)
        self.train_poses = self.scene.train.poses.to(device)
        self.step_scheduler = None

    # -- rays and rendering ------------------------------------------------------------------------
    def _prepare(self, views: Views, o: torch.Tensor, d: torch.Tensor):
        viewdirs = d / d.norm(dim=-1, keepdim=True)
        if self.scene.ndc:
            o, d = ndc_rays(views.height, views.width, views.focal, 1.0, o, d)
        return o, d, viewdirs

    def render(self, model: nn.Module, o: torch.Tensor, d: torch.Tensor, viewdirs: torch.Tensor,
               training: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Coarse and fine RGB (n x 3) of a batch of rays."""
        m = self.cfg.model
        n = o.shape[0]
        noise = float(self.cfg.dataset.raw_noise_std) if training else 0.0
        z = stratified_depths(self.scene.near, self.scene.far, n, int(m.samples), training, o.device)

        def run(network, z):
            points = o[:, None, :] + d[:, None, :] * z[..., None]
            dirs = viewdirs[:, None, :].expand_as(points)
            with torch.autocast(o.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                raw = network(points.reshape(-1, 3), dirs.reshape(-1, 3))
            return composite(raw.float().reshape(n, z.shape[1], 4), z, d, self.scene.white_background, noise)

        rgb_coarse, weights = run(model.coarse, z)
        if model.fine is None or int(m.importance) == 0:
            return rgb_coarse, None
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        extra = importance_depths(mids, weights[:, 1:-1].detach(), int(m.importance), deterministic=not training)
        z_fine, _ = torch.sort(torch.cat([z, extra.detach()], -1), -1)
        rgb_fine, _ = run(model.fine, z_fine)
        return rgb_coarse, rgb_fine

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
        from dfa_bench.models.nerf import NeRF

        m = self.cfg.model
        return NeRF(int(m.layers), int(m.width), m.skip, int(m.xyz_frequencies), int(m.dir_frequencies),
                    fine=int(m.importance) > 0)

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
