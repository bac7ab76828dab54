"""The `[splat]` config section: how a video becomes a Gaussian splat."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


class SplatConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings for the splat pipeline (frames -> SfM -> training -> .ply).

    The defaults fit a CPU-only box: small frames, a few thousand Gaussians, minutes per
    job. A GPU box raises `max_side`, `iterations` and `max_gaussians`.
    """

    fps: Annotated[float, msgspec.Meta(ge=0)] = 4.0
    """Frames per second sampled from the video before the blur filter; 0 keeps every
    decoded frame. Lowered automatically when the video is long enough that `max_frames`
    would otherwise cut it short."""

    max_side: Annotated[int, msgspec.Meta(ge=64, le=4096)] = 320
    """Frames are downscaled so their longer side is at most this many pixels; SfM and
    training both run at this size (training cost grows with the pixel count)."""

    max_frames: Annotated[int, msgspec.Meta(ge=3, le=2000)] = 60
    """At most this many frames go to SfM and training, spread evenly over the video."""

    blur_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    """A frame is dropped as blurry when its sharpness (variance of the Laplacian) is below
    this fraction of the median of its neighbours'; 0 keeps every frame."""

    matcher: Literal["sequential", "exhaustive"] = "sequential"
    """Feature matching: `sequential` pairs each frame with its next few (right for video,
    linear in the frame count); `exhaustive` pairs every two frames (quadratic, but finds
    loop closures)."""

    min_registered: Annotated[int, msgspec.Meta(ge=2)] = 8
    """SfM must place at least this many frames (and half of them) or the job fails with
    a clear error instead of training on a broken scene."""

    iterations: Annotated[int, msgspec.Meta(ge=1)] = 1700
    """Training steps (one frame each; the first 30% at half resolution). About 0.25 s
    each on 2 CPU cores at 320 px with 8000 Gaussians: the default job takes about 7 minutes
    of training on such a box (the 23 monstree photos: about 10 minutes in all, 20.2 dB
    held-out PSNR; 1200 steps stopped at 19.7 dB)."""

    max_gaussians: Annotated[int, msgspec.Meta(ge=100)] = 8000
    """Upper bound on the splat size: the SfM points are subsampled to it and
    densification stops there."""

    sh_degree: Annotated[int, msgspec.Meta(ge=0, le=3)] = 0
    """Spherical-harmonics degree trained (view-dependent colour); 0 trains flat colours,
    enough on CPU. The .ply always carries the degree-3 layout (45 `f_rest_*` fields, the
    ones viewers expect), zero-filled past the trained degree."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where training runs: `auto` uses CUDA when torch sees a GPU (with gsplat when it is
    installed), else the built-in CPU rasterizer."""

    checkpoint_every: Annotated[int, msgspec.Meta(ge=1)] = 250
    """Training saves a checkpoint this often (steps), so a retried job resumes there."""

    seed: int = 0
    """Seed for subsampling and densification: the same input gives the same splat."""
