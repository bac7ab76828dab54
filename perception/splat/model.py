"""Trainable Gaussians: parameters, their Adam optimizer, and adaptive density control.

Parameters are kept pre-activation, as in 3DGS and the .ply: means, log scales, raw
quaternions (w, x, y, z), opacity logits, SH DC and higher-order coefficients. Densify
and prune resize every parameter and its Adam moments together, so training carries on
where it was instead of restarting the optimizer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from perception.splat.ply import SH_C0, Splat

# Learning rates, per parameter. The means' rate is multiplied by the scene extent and
# decays exponentially to MEANS_LR_FINAL_RATIO of it. They are 3DGS's rates scaled up for
# runs of a few thousand steps rather than 30k.
LRS = {
    "means": 4e-4,
    "log_scales": 1e-2,
    "quats": 2e-3,
    "opacity_logits": 5e-2,
    "sh_dc": 5e-3,
    "sh_rest": 5e-3 / 20,
}
MEANS_LR_FINAL_RATIO = 0.01
INIT_OPACITY = 0.1
# A candidate for densification whose largest axis is below this fraction of the scene
# extent is cloned, above it is split in two (3DGS's "percent_dense").
PERCENT_DENSE = 0.01
SPLIT_SHRINK = 1.6
# Average screen-space gradient of a Gaussian's centre (in NDC, as 3DGS measures it) above
# which it is under-reconstructing and gets densified.
GRAD_THRESHOLD = 2e-4
MIN_OPACITY = 0.005
# Gaussians grown bigger than this fraction of the scene are degenerate floaters.
MAX_WORLD_SCALE = 0.5


class Gaussians:
    """The parameters being trained and their optimizer."""

    def __init__(self, params: dict[str, Tensor], extent: float) -> None:
        self.extent = extent
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        groups: list[dict[str, Any]] = [
            {"params": [p], "lr": LRS[k] * (extent if k == "means" else 1.0), "name": k}
            for k, p in self.params.items()
        ]
        self.opt = torch.optim.Adam(groups, eps=1e-15)
        n = len(self)
        self.grad_accum = torch.zeros(n, device=self.device)
        self.grad_count = torch.zeros(n, device=self.device)

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return self.params["means"].device

    @classmethod
    def from_points(
        cls,
        points: np.ndarray,
        colors: np.ndarray,
        sh_degree: int,
        extent: float,
        device: torch.device,
    ) -> Gaussians:
        """One isotropic Gaussian per SfM point, sized by its 3 nearest neighbours' distance."""
        from scipy.spatial import cKDTree

        n = len(points)
        k = min(4, n)
        dist, _ = cKDTree(points).query(points, k=k)
        dist = np.asarray(dist).reshape(n, k)[:, 1:] if k > 1 else np.full((n, 1), 0.01 * extent)
        scale = np.sqrt(np.maximum((dist**2).mean(1), 1e-14))
        params = {
            "means": torch.tensor(points, dtype=torch.float32),
            "log_scales": torch.tensor(np.log(scale), dtype=torch.float32)[:, None].repeat(1, 3),
            "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
            "opacity_logits": torch.full((n,), math.log(INIT_OPACITY / (1 - INIT_OPACITY))),
            "sh_dc": torch.tensor((colors - 0.5) / SH_C0, dtype=torch.float32),
        }
        if sh_degree > 0:
            params["sh_rest"] = torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3)
        return cls({k: v.to(device) for k, v in params.items()}, extent)

    def activated(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """means, unit quaternions, scales, opacities, SH [N, K, 3] as the renderer takes them."""
        p = self.params
        sh = p["sh_dc"][:, None, :]
        if "sh_rest" in p:
            sh = torch.cat([sh, p["sh_rest"]], 1)
        quats = p["quats"] / p["quats"].norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return p["means"], quats, torch.exp(p["log_scales"]), torch.sigmoid(p["opacity_logits"]), sh

    def set_means_lr(self, step: int, total: int) -> None:
        """Exponential decay of the means' learning rate over the run (as 3DGS)."""
        t = min(1.0, step / max(total, 1))
        lr = LRS["means"] * self.extent * MEANS_LR_FINAL_RATIO**t
        for group in self.opt.param_groups:
            if group["name"] == "means":
                group["lr"] = lr

    def add_grad_stats(self, ids: Tensor, grad2d: Tensor, width: int, height: int) -> None:
        """Accumulate the screen-space gradient of visible Gaussians' centres (in NDC units)."""
        ndc = torch.stack([grad2d[:, 0] * 0.5 * width, grad2d[:, 1] * 0.5 * height], -1)
        self.grad_accum.index_add_(0, ids, ndc.norm(dim=-1))
        self.grad_count.index_add_(0, ids, torch.ones_like(ids, dtype=self.grad_count.dtype))

    @torch.no_grad()
    def densify_and_prune(self, max_gaussians: int, generator: torch.Generator) -> dict[str, int]:
        """Clone small and split large under-reconstructed Gaussians, drop faint and huge ones."""
        p = self.params
        n = len(self)
        avg = self.grad_accum / self.grad_count.clamp_min(1)
        scales = torch.exp(p["log_scales"])
        biggest = scales.max(dim=1).values
        cand = (avg >= GRAD_THRESHOLD).nonzero().squeeze(1)
        budget = max(0, max_gaussians - n)
        if cand.numel() > budget:
            cand = cand[torch.argsort(avg[cand], descending=True)[:budget]]
        small = biggest[cand] <= PERCENT_DENSE * self.extent
        clone, split = cand[small], cand[~small]
        new = {k: torch.cat([v[clone], v[split], v[split]]) for k, v in p.items()}
        if split.numel():
            # Two samples from each split Gaussian's own distribution, each smaller.
            from perception.splat.raster import quat_to_rotmat

            rot = quat_to_rotmat(p["quats"][split]).repeat(2, 1, 1)
            std = scales[split].repeat(2, 1)
            noise = torch.randn(std.shape, generator=generator, device="cpu").to(std.device)
            offset = (rot @ (noise * std)[:, :, None]).squeeze(-1)
            at = clone.numel()
            new["means"][at:] += offset
            new["log_scales"][at:] -= math.log(SPLIT_SHRINK)
        opacity = torch.sigmoid(p["opacity_logits"])
        drop = (opacity < MIN_OPACITY) | (biggest > MAX_WORLD_SCALE * self.extent)
        drop[split] = True
        keep = (~drop).nonzero().squeeze(1)
        self._resize(keep, new)
        return {
            "cloned": int(clone.numel()),
            "split": int(split.numel()),
            "pruned": int(drop.sum()) - int(split.numel()),
        }

    def _resize(self, keep: Tensor, extra: dict[str, Tensor]) -> None:
        """Keep the rows `keep` of every parameter, append `extra`, and carry Adam's moments."""
        for group in self.opt.param_groups:
            name = group["name"]
            old = group["params"][0]
            fresh = torch.cat([old.detach()[keep], extra[name]]).requires_grad_(True)
            state = self.opt.state.pop(old, None)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key] = torch.cat([state[key][keep], torch.zeros_like(extra[name])])
                self.opt.state[fresh] = state
            group["params"][0] = fresh
            self.params[name] = fresh
        self.grad_accum = torch.zeros(len(self), device=self.device)
        self.grad_count = torch.zeros(len(self), device=self.device)

    def to_splat(self, sh_degree: int) -> Splat:
        """The trained Gaussians in the .ply's parameterisation."""
        p = {k: v.detach().float().cpu().numpy() for k, v in self.params.items()}
        n = len(self)
        rest = p.get("sh_rest", np.zeros((n, (sh_degree + 1) ** 2 - 1, 3), np.float32))
        quats = p["quats"] / np.maximum(np.linalg.norm(p["quats"], axis=1, keepdims=True), 1e-12)
        return Splat(
            means=p["means"],
            sh_dc=p["sh_dc"],
            sh_rest=rest.astype(np.float32),
            opacity_logits=p["opacity_logits"],
            log_scales=p["log_scales"],
            quats=quats.astype(np.float32),
        )
