"""The `[perception]` config section: frame sampling, the segmenter and its tracking knobs."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


class PerceptionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings for video → frames → tracked masks → scene facts."""

    segmenter: Literal["cpu", "sam2"] = "cpu"
    """`cpu`: the classical segmenter, no weights, the embedded default. `sam2`: SAM 2 video
    segmentation; needs the `sam2` package, torch and `sam2_checkpoint`."""

    fps: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """Frames sampled per second of video (by timestamp, so variable frame rate is fine).
    A value above the video's own rate keeps every frame."""

    max_side: Annotated[int, msgspec.Meta(ge=0)] = 640
    """Sampled frames are resized so their longer side is at most this (aspect kept, never
    upscaled); 0 keeps the source size."""

    sam2_checkpoint: str = ""
    """Path of a SAM 2 checkpoint (`.pt`); required when `segmenter = "sam2"`."""

    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    """The model config inside the `sam2` package that matches the checkpoint."""

    sam2_points_per_side: Annotated[int, msgspec.Meta(ge=1)] = 32
    """SAM 2 automatic masks: point-grid density on key frames (cost grows with its square)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where SAM 2 runs; `auto` picks CUDA when torch sees a GPU. The CPU segmenter ignores it."""

    keyframe_every: Annotated[int, msgspec.Meta(ge=1)] = 10
    """SAM 2: sampled frames between key frames, where new objects are looked for; masks are
    propagated in between."""

    min_area_frac: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.002
    """Masks smaller than this fraction of the frame are ignored (noise, far-away clutter)."""

    max_area_frac: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.6
    """Masks larger than this fraction of the frame are ignored (a whole wall or floor seen up
    close is background, not an object)."""

    min_track_frames: Annotated[int, msgspec.Meta(ge=1)] = 3
    """Tracks seen in fewer sampled frames than this are dropped as flicker."""

    max_gap: Annotated[int, msgspec.Meta(ge=0)] = 2
    """Sampled frames a track may go unseen (occlusion, a missed detection) and still continue
    under the same id."""

    work_side: Annotated[int, msgspec.Meta(ge=64)] = 320
    """CPU segmenter: frames are segmented at this longer side, and masks scaled back to the
    frame size; smaller is faster and coarser."""

    texture_threshold: Annotated[float, msgspec.Meta(gt=0)] = 7.0
    """CPU segmenter: local colour spread (Lab units) above which a pixel counts as texture
    or an edge rather than part of a uniform surface; raise it for noisy, low-light video."""

    match_iou: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    """CPU segmenter: the least mask IoU (after motion prediction) for a detection to continue
    a track by overlap alone; below it, only a close centroid with similar size and colour can."""
