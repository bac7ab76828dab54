"""How good a splat is: PSNR and SSIM of its renders on views it never trained on.

The standard 3DGS evaluation protocol (Kerbl et al. 2023, after Mip-NeRF 360): with the
registered views sorted by name, every 8th (index 0, 8, 16, ...) is held out of training;
the metrics are the means over those held-out views of per-image PSNR and SSIM (Gaussian
window 11, sigma 1.5, as the reference code's `ssim`), on RGB in [0, 1].
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

HOLDOUT_EVERY = 8
# With fewer registered views than this nothing is held out (training needs them all), and
# the reported metrics are on training views, flagged as such.
MIN_VIEWS_FOR_HOLDOUT = 4
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
C1, C2 = 0.01**2, 0.03**2

T = TypeVar("T")


def split_views(views: list[T]) -> tuple[list[T], list[T]]:
    """(training views, held-out views): every 8th view, from the first, is held out."""
    if len(views) < MIN_VIEWS_FOR_HOLDOUT:
        return list(views), []
    train = [v for i, v in enumerate(views) if i % HOLDOUT_EVERY != 0]
    held = [v for i, v in enumerate(views) if i % HOLDOUT_EVERY == 0]
    return train, held


def psnr(image: Tensor, target: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two [H, W, 3] images in [0, 1]."""
    mse = float(((image.clamp(0, 1) - target) ** 2).mean())
    return 100.0 if mse <= 1e-10 else -10.0 * math.log10(mse)


def _window(device: torch.device) -> Tensor:
    x = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - SSIM_WINDOW // 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).expand(3, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(image: Tensor, target: Tensor) -> float:
    """Structural similarity of two [H, W, 3] images in [0, 1] (mean over the image)."""
    return float(ssim_tensor(image.clamp(0, 1), target))


def ssim_tensor(image: Tensor, target: Tensor) -> Tensor:
    """SSIM as a differentiable scalar tensor (training's D-SSIM term is 1 minus it)."""
    a = image.permute(2, 0, 1)[None]
    b = target.permute(2, 0, 1)[None]
    w = _window(a.device)
    pad = SSIM_WINDOW // 2
    mu_a = F.conv2d(a, w, padding=pad, groups=3)
    mu_b = F.conv2d(b, w, padding=pad, groups=3)
    var_a = F.conv2d(a * a, w, padding=pad, groups=3) - mu_a**2
    var_b = F.conv2d(b * b, w, padding=pad, groups=3) - mu_b**2
    cov = F.conv2d(a * b, w, padding=pad, groups=3) - mu_a * mu_b
    num = (2 * mu_a * mu_b + C1) * (2 * cov + C2)
    den = (mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2)
    return (num / den).mean()
