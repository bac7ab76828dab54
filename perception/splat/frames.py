"""Frames for SfM: decode with PyAV, sample in time, downscale, drop the blurry ones.

Writes `out_dir/000000.jpg, 000001.jpg, ...` (in video order, the names SfM's sequential
matcher sorts by) and `out_dir/frames.json` describing each kept frame. Decoding (the
refusal of what is not a video, time-based picking, truncation, display orientation and
the sharpness score) is `perception.video`'s, the decoder the perception pipeline uses too.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perception.progress import InvalidInput
from perception.video import Pass, decode, probe

Json = dict[str, Any]
# Sample this many times more candidates than `max_frames`, so dropping blurry ones still
# leaves about `max_frames`.
OVERSAMPLE = 1.5
# Sharpness is compared with this many neighbours on each side: motion blur comes and goes
# with the camera's speed, so a frame is judged against its moment, not the whole video.
BLUR_WINDOW = 3
MIN_FRAMES = 3
JPEG_QUALITY = 95


def blurry(scores: list[float], ratio: float) -> list[bool]:
    """Which frames are much blurrier than the median of their neighbours."""
    flags = []
    for i, s in enumerate(scores):
        near = scores[max(0, i - BLUR_WINDOW) : i] + scores[i + 1 : i + 1 + BLUR_WINDOW]
        flags.append(bool(near) and s < ratio * statistics.median(near))
    return flags


def extract_frames(
    video: Path,
    out_dir: Path,
    *,
    fps: float,
    max_side: int,
    max_frames: int,
    blur_ratio: float,
    progress: Callable[[float], None],
) -> Json:
    """Decode `video` into at most `max_frames` sharp JPEGs in `out_dir`; return a summary."""
    info = probe(video)
    interval = 1.0 / fps if fps > 0 else 0.0
    if info.duration > 0:
        # A long video is sampled more sparsely rather than cut off at max_frames.
        interval = max(interval, info.duration / (max_frames * OVERSAMPLE))
    candidates: list[Json] = []
    result = Pass()
    for picked in decode(video, info, interval, max_side, result):
        name = f"cand_{len(candidates):06d}.jpg"
        jpeg = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        if not cv2.imwrite(str(out_dir / name), picked.image, jpeg):
            raise OSError(f"could not write {out_dir / name}")
        candidates.append(
            {
                "file": name,
                "index": picked.source_frame,
                "time": round(picked.t, 4),
                "sharpness": round(picked.sharpness, 3),
            }
        )
        if info.duration > 0:
            progress(0.95 * min(1.0, picked.t / info.duration))
    flags = (
        blurry([c["sharpness"] for c in candidates], blur_ratio)
        if blur_ratio > 0
        else [False] * len(candidates)
    )
    sharp = [c for c, bad in zip(candidates, flags, strict=True) if not bad]
    if len(sharp) > max_frames:
        picks = np.round(np.linspace(0, len(sharp) - 1, max_frames)).astype(int)
        sharp = [sharp[i] for i in sorted(set(picks.tolist()))]
    if len(sharp) < MIN_FRAMES:
        raise InvalidInput(
            f"{video.name}: only {len(sharp)} usable frame(s) (need {MIN_FRAMES}); "
            "the video is too short or too blurry"
        )
    keep = {c["file"] for c in sharp}
    for c in candidates:
        if c["file"] not in keep:
            (out_dir / c["file"]).unlink()
    for i, c in enumerate(sharp):
        final = f"{i:06d}.jpg"
        (out_dir / c["file"]).rename(out_dir / final)
        c["file"] = final
    first = cv2.imread(str(out_dir / sharp[0]["file"]))
    if first is None:
        raise OSError(f"cannot read back {sharp[0]['file']}")
    height, width = first.shape[:2]
    manifest = {
        "video": video.name,
        "width": width,
        "height": height,
        "decoded": result.decoded,
        "truncated": result.truncated,
        "dropped_blurry": [c["index"] for c, bad in zip(candidates, flags, strict=True) if bad],
        "frames": sharp,
    }
    (out_dir / "frames.json").write_text(json.dumps(manifest, indent=1))
    progress(1.0)
    return {
        "frames": len(sharp),
        "decoded": result.decoded,
        "width": width,
        "height": height,
        "dropped_blurry": len(manifest["dropped_blurry"]),
        "truncated": result.truncated,
    }
