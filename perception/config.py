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
    """SAM 2: masks smaller than this fraction of the frame are ignored (noise, far-away
    clutter). The CPU segmenter uses `min_blob_frac` instead."""

    max_area_frac: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.6
    """Masks larger than this fraction of the frame are ignored (a whole wall or floor seen up
    close is background, not an object)."""

    min_track_frames: Annotated[int, msgspec.Meta(ge=1)] = 3
    """Tracks seen in fewer sampled frames than this are dropped as flicker."""

    max_gap: Annotated[int, msgspec.Meta(ge=0)] = 2
    """Sampled frames a track may go unseen (occlusion, a missed detection) and still continue
    under the same id."""

    work_side: Annotated[int, msgspec.Meta(ge=64)] = 640
    """CPU segmenter: foreground is found with frames scaled to this longer side (masks are
    scaled back to the frame size); smaller is faster and misses small, far-away things."""

    still_frac: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.002
    """CPU segmenter: a shot whose median camera motion between sampled frames is under this
    fraction of the frame's longer side comes from a fixed camera, and gets a background
    model; 0 treats every shot as hand-held."""

    min_blob_frac: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0004
    """CPU segmenter: moving blobs smaller than this fraction of the frame are ignored (a
    leaf, compression noise). Smaller than `min_area_frac`: a far-away person is small, and
    motion is evidence a still patch of colour is not."""

    background_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """CPU segmenter, fixed camera: a thing that stands still for about this many seconds
    becomes background (a parked car); shorter adapts faster to changing light."""

    background_threshold: Annotated[float, msgspec.Meta(gt=0)] = 16.0
    """CPU segmenter, fixed camera: squared distance (in the background model's standard
    deviations) beyond which a pixel is foreground; raise it for noisy, low-light video."""

    motion_threshold: Annotated[float, msgspec.Meta(gt=0)] = 16.0
    """CPU segmenter, moving camera: grey levels by which a pixel must differ from the frames
    before and after it, once the camera's motion is taken out, to count as moving on its
    own (a frame that differs more everywhere, from blur or noise, raises it)."""

    join_frac: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.008
    """CPU segmenter: foreground pieces closer than this fraction of the frame's longer side
    (twice that vertically) are joined into one object: the parts of one body that a
    background-coloured belt or bag cut apart."""

    min_track_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """CPU segmenter: tracks seen in fewer sampled frames than this many seconds' worth
    (on top of `min_track_frames`) are dropped: the flicker of an eye, a hand or a shadow
    for half a second is not what a person points at; 0 keeps only `min_track_frames`."""

    min_contrast: Annotated[float, msgspec.Meta(gt=0)] = 1.75
    """CPU segmenter: a blob is an object only if it changed this many times more than the
    background right around it; swaying leaves, rippling water and sensor noise change
    everywhere at once and stay under it."""

    match_iou: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    """CPU segmenter: the least mask IoU (after motion prediction) for a detection to continue
    a track by overlap alone; below it, only a close centroid with similar size and colour can."""

    find_subject: bool = True
    """CPU segmenter: in a hand-held shot (or a run of photos of one scene) where nothing
    moves on its own, report the one thing the camera kept in view as a track: the subject
    (docs/perception.md); false reports only what moves."""
