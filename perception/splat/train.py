"""Gaussian splat training from an SfM reconstruction, resumable from checkpoints.

On CUDA with gsplat installed it rasterizes with gsplat; everywhere else with the plain
PyTorch rasterizer in `raster.py` (the CPU path: small frames, a few thousand Gaussians).
The loss is 3DGS's 0.8 L1 + 0.2 D-SSIM; Adam on every parameter; 3DGS-style densification.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from perception.files import atomic_write
from perception.progress import InvalidInput, OutOfMemory
from perception.splat import raster
from perception.splat.config import SplatConfig
from perception.splat.model import Gaussians
from perception.splat.ply import Splat
from perception.splat.quality import HOLDOUT_EVERY, psnr, split_views, ssim, ssim_tensor
from perception.splat.scene import Scene, View

Json = dict[str, Any]
# Densify every DENSIFY_EVERY steps, from DENSIFY_FROM until this share of the run, so the
# last steps refine a fixed set.
DENSIFY_EVERY = 100
DENSIFY_FROM = 100
DENSIFY_UNTIL = 0.6
# The active SH degree goes up by one every this many steps (3DGS: 1000).
SH_STEP = 500
# The first WARMUP share of the steps trains on half-size frames (a quarter of the pixels,
# so about a quarter of the rasterizing): coarse structure first, detail after.
WARMUP = 0.3
EVAL_VIEWS = 8
PROGRESS_EVERY = 5
# What an interrupted run's checkpoint must match to be resumed.
FINGERPRINT_FIELDS = ("iterations", "max_gaussians", "sh_degree", "seed")
HOLDOUT_VERSION = 1  # bumped when which views are held out changes: old checkpoints are void
# The loss is 3DGS's: (1 - w) * L1 + w * (1 - SSIM), w = 0.2.
DSSIM_WEIGHT = 0.2
# The background behind the Gaussians (black, as 3DGS's default).
BACKGROUND = (0.0, 0.0, 0.0)

Renderer = Callable[[Gaussians, View, int], tuple[Tensor, Tensor, Callable[[], Tensor]]]


def resolve_device(wanted: str) -> torch.device:
    """The torch device for `auto` / `cpu` / `cuda`."""
    if wanted == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if wanted == "cuda":
        raise InvalidInput("splat.device is cuda but torch sees no CUDA device")
    return torch.device("cpu")


def camera(view: View, device: torch.device) -> raster.Camera:
    """A view's camera as the rasterizer takes it."""
    return raster.Camera(
        rotation=torch.tensor(view.rotation, dtype=torch.float32, device=device),
        translation=torch.tensor(view.translation, dtype=torch.float32, device=device),
        fx=view.fx,
        fy=view.fy,
        cx=view.cx,
        cy=view.cy,
        width=view.width,
        height=view.height,
    )


def _torch_renderer(device: torch.device) -> Renderer:
    background = torch.tensor(BACKGROUND, device=device)
    cams: dict[int, raster.Camera] = {}

    def render(
        model: Gaussians, view: View, sh_degree: int
    ) -> tuple[Tensor, Tensor, Callable[[], Tensor]]:
        cam = cams.setdefault(id(view), camera(view, device))
        means, quats, scales, opacities, sh = model.activated()
        img, proj = raster.render(means, quats, scales, opacities, sh, sh_degree, cam, background)
        if proj.means2d.requires_grad:
            proj.means2d.retain_grad()

        def grad2d() -> Tensor:
            g = proj.means2d.grad
            return g if g is not None else torch.zeros_like(proj.means2d)

        return img, proj.ids, grad2d

    return render


def _gsplat_renderer(device: torch.device) -> Renderer | None:
    try:
        from gsplat import rasterization
    except ImportError:
        return None
    background = torch.tensor([BACKGROUND], device=device)

    def render(
        model: Gaussians, view: View, sh_degree: int
    ) -> tuple[Tensor, Tensor, Callable[[], Tensor]]:
        means, quats, scales, opacities, sh = model.activated()
        viewmat = torch.eye(4, device=device)
        viewmat[:3, :3] = torch.tensor(view.rotation, dtype=torch.float32, device=device)
        viewmat[:3, 3] = torch.tensor(view.translation, dtype=torch.float32, device=device)
        k = torch.tensor([[view.fx, 0, view.cx], [0, view.fy, view.cy], [0, 0, 1.0]], device=device)
        colors, _alphas, meta = rasterization(
            means, quats, scales, opacities, sh, viewmat[None], k[None], view.width, view.height,
            sh_degree=sh_degree, packed=False, backgrounds=background,
        )  # fmt: skip
        means2d: Tensor = meta["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()
        radii: Tensor = meta["radii"][0]
        visible = (radii > 0).all(-1) if radii.dim() == 2 else radii > 0
        ids = visible.nonzero().squeeze(1)

        def grad2d() -> Tensor:
            g = means2d.grad
            return g[0][ids] if g is not None else torch.zeros(len(ids), 2, device=device)

        return colors[0], ids, grad2d

    return render


def _half(view: View) -> View:
    """The view at half size: pixel centres scale with the image, so do fx, fy, cx, cy."""
    w, h = max(1, view.width // 2), max(1, view.height // 2)
    sx, sy = w / view.width, h / view.height
    img = cv2.resize(view.image, (w, h), interpolation=cv2.INTER_AREA)
    return dataclasses.replace(
        view,
        fx=view.fx * sx,
        fy=view.fy * sy,
        cx=view.cx * sx,
        cy=view.cy * sy,
        image=np.ascontiguousarray(img, np.uint8),
    )


def _view_order(n: int, step: int, seed: int) -> int:
    """Which view trains at `step`: a fresh shuffle every epoch, reproducible after a resume."""
    epoch, i = divmod(step, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return int(perm[i])


@torch.no_grad()
def _eval_l1(
    model: Gaussians, views: list[View], targets: list[Tensor], render: Renderer, degree: int
) -> float:
    picks = np.unique(
        np.linspace(0, len(views) - 1, min(EVAL_VIEWS, len(views))).round().astype(int)
    )
    losses = [float((render(model, views[i], degree)[0] - targets[i]).abs().mean()) for i in picks]
    return float(np.mean(losses))


def _fingerprint(cfg: SplatConfig, scene: Scene) -> Json:
    return {
        **{f: getattr(cfg, f) for f in FINGERPRINT_FIELDS},
        "views": len(scene.views),
        "points": len(scene.points),
        "holdout": [HOLDOUT_VERSION, HOLDOUT_EVERY],
    }


def _save_checkpoint(path: Path, state: Json) -> None:
    with atomic_write(path) as fh:
        torch.save(state, fh)


def train(
    scene: Scene, cfg: SplatConfig, checkpoint: Path, progress: Callable[[float], None]
) -> tuple[Splat, Json]:
    """Train Gaussians on `scene`; return them and a summary. Resumes from `checkpoint`."""
    device = resolve_device(cfg.device)
    try:
        return _train(scene, cfg, checkpoint, progress, device)
    except torch.cuda.OutOfMemoryError as exc:
        raise OutOfMemory(f"GPU out of memory while training the splat: {exc}") from exc
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc):
            raise OutOfMemory(f"out of memory while training the splat: {exc}") from exc
        raise


def _train(
    scene: Scene,
    cfg: SplatConfig,
    checkpoint: Path,
    progress: Callable[[float], None],
    device: torch.device,
) -> tuple[Splat, Json]:
    if len(scene.points) < 4:
        raise InvalidInput(
            f"structure from motion found only {len(scene.points)} 3D points; nothing to train"
        )
    render = _gsplat_renderer(device) if device.type == "cuda" else None
    backend = "gsplat"
    if render is None:
        render, backend = _torch_renderer(device), f"torch-{device.type}"
    rng = np.random.default_rng(cfg.seed)
    points, colors = scene.points, scene.colors
    if len(points) > cfg.max_gaussians:
        pick = np.sort(rng.choice(len(points), cfg.max_gaussians, replace=False))
        points, colors = points[pick], colors[pick]
    views, held = split_views(scene.views)
    targets = [torch.tensor(v.image, dtype=torch.float32, device=device) / 255.0 for v in views]
    small = [_half(v) for v in views]
    small_targets = [
        torch.tensor(v.image, dtype=torch.float32, device=device) / 255.0 for v in small
    ]
    warmup = int(WARMUP * cfg.iterations)
    fingerprint = _fingerprint(cfg, scene)
    model = Gaussians.from_points(points, colors, cfg.sh_degree, scene.extent, device)
    start, loss_start, resumed = 0, math.nan, 0
    saved = (
        torch.load(checkpoint, map_location=device, weights_only=True)
        if checkpoint.exists()
        else None
    )
    if saved is not None and saved.get("fingerprint") == fingerprint:
        model = Gaussians(saved["params"], scene.extent)
        model.opt.load_state_dict(saved["opt"])
        model.grad_accum, model.grad_count = saved["grad_accum"], saved["grad_count"]
        start = resumed = int(saved["iteration"])
        loss_start = float(saved["loss_start"])
    if math.isnan(loss_start):
        loss_start = _eval_l1(model, views, targets, render, 0)
    started = time.monotonic()
    densify_until = int(DENSIFY_UNTIL * cfg.iterations)
    stats = {"cloned": 0, "split": 0, "pruned": 0}
    for step in range(start, cfg.iterations):
        degree = min(cfg.sh_degree, step // SH_STEP)
        model.set_means_lr(step, cfg.iterations)
        i = _view_order(len(views), step, cfg.seed)
        view, target = (small[i], small_targets[i]) if step < warmup else (views[i], targets[i])
        img, ids, grad2d = render(model, view, degree)
        loss = (1 - DSSIM_WEIGHT) * (img - target).abs().mean() + DSSIM_WEIGHT * (
            1 - ssim_tensor(img, target)
        )
        model.opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)  # typed, unlike Tensor.backward
        model.opt.step()
        done = step + 1
        if done < densify_until:
            model.add_grad_stats(ids, grad2d().detach(), view.width, view.height)
            if done >= DENSIFY_FROM and done % DENSIFY_EVERY == 0:
                gen = torch.Generator().manual_seed(cfg.seed * 7919 + done)
                for k, v in model.densify_and_prune(cfg.max_gaussians, gen).items():
                    stats[k] += v
        if done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            _save_checkpoint(
                checkpoint,
                {
                    "iteration": done,
                    "params": {k: v.detach() for k, v in model.params.items()},
                    "opt": model.opt.state_dict(),
                    "grad_accum": model.grad_accum,
                    "grad_count": model.grad_count,
                    "loss_start": loss_start,
                    "fingerprint": fingerprint,
                },
            )
        if done % PROGRESS_EVERY == 0:
            progress(0.95 * done / cfg.iterations)
    seconds = time.monotonic() - started
    degree = min(cfg.sh_degree, max(cfg.iterations - 1, 0) // SH_STEP)
    loss_end = _eval_l1(model, views, targets, render, degree)
    quality = evaluate(model, held or views, render, degree, held_out=bool(held))
    progress(1.0)
    summary = {
        "backend": backend,
        "iterations": cfg.iterations,
        "resumed_at": resumed,
        "gaussians": len(model),
        "initial_gaussians": len(points),
        **stats,
        "loss_start": round(loss_start, 5),
        "loss_end": round(loss_end, 5),
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / max(cfg.iterations - start, 1), 4),
        "quality": quality,
    }
    return model.to_splat(cfg.sh_degree), summary


@torch.no_grad()
def evaluate(
    model: Gaussians, views: list[View], render: Renderer, degree: int, *, held_out: bool
) -> Json:
    """Mean PSNR and SSIM of the model's renders of `views` (the held-out ones, normally)."""
    scores = []
    for view in views:
        target = torch.tensor(view.image, dtype=torch.float32, device=model.device) / 255.0
        image = render(model, view, degree)[0]
        scores.append((psnr(image, target), ssim(image, target)))
    return {
        "psnr": round(float(np.mean([p for p, _ in scores])), 3),
        "ssim": round(float(np.mean([q for _, q in scores])), 4),
        "views": [v.name for v in views],
        "held_out": held_out,
        "protocol": f"every {HOLDOUT_EVERY}th registered view held out" if held_out else "",
    }


def render_image(splat: Splat, view: View) -> np.ndarray:
    """Render a trained splat from `view` on the CPU (uint8 RGB); for previews."""
    dev = torch.device("cpu")
    quats = torch.tensor(splat.quats)
    sh = torch.cat([torch.tensor(splat.sh_dc)[:, None], torch.tensor(splat.sh_rest)], 1)
    with torch.no_grad():
        img, _ = raster.render(
            torch.tensor(splat.means),
            quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12),
            torch.exp(torch.tensor(splat.log_scales)),
            torch.sigmoid(torch.tensor(splat.opacity_logits)),
            sh,
            splat.sh_degree,
            camera(view, dev),
            torch.tensor(BACKGROUND),
        )
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
