"""Frames for SfM: decode with PyAV, sample in time, downscale, drop the blurry ones.

Writes `out_dir/000000.jpg, 000001.jpg, ...` (in video order, the names SfM's sequential
matcher sorts by) and `out_dir/frames.json` describing each kept frame.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from perception.progress import InvalidInput

Json = dict[str, Any]
# Sample this many times more candidates than `max_frames`, so dropping blurry ones still
# leaves about `max_frames`.
OVERSAMPLE = 1.5
# Sharpness is compared with this many neighbours on each side: motion blur comes and goes
# with the camera's speed, so a frame is judged against its moment, not the whole video.
BLUR_WINDOW = 3
MIN_FRAMES = 3
JPEG_QUALITY = 95


def sharpness(gray: NDArray[np.uint8]) -> float:
    """Variance of the Laplacian: high for crisp detail, low for blur."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def blurry(scores: list[float], ratio: float) -> list[bool]:
    """Which frames are much blurrier than the median of their neighbours."""
    flags = []
    for i, s in enumerate(scores):
        near = scores[max(0, i - BLUR_WINDOW) : i] + scores[i + 1 : i + 1 + BLUR_WINDOW]
        flags.append(bool(near) and s < ratio * statistics.median(near))
    return flags


def _upright(img: NDArray[np.uint8], rotation: float) -> NDArray[np.uint8]:
    # Phones store portrait video sideways plus a display matrix; PyAV reports its angle
    # (counter-clockwise), and ffmpeg's autorotate turns the picture by minus that.
    turn = round(-rotation / 90.0) % 4
    codes = {1: cv2.ROTATE_90_CLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return np.asarray(cv2.rotate(img, codes[turn]), np.uint8) if turn else img


def _resize(img: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), np.uint8)


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
    import av

    try:
        container = av.open(str(video))
    except (av.FFmpegError, OSError) as exc:
        raise InvalidInput(f"{video.name}: not a readable video ({exc})") from exc
    candidates: list[Json] = []
    decoded = 0
    truncated = False
    with container:
        if not container.streams.video:
            raise InvalidInput(f"{video.name}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        interval = 1.0 / fps if fps > 0 else 0.0
        if duration > 0:
            # A long video is sampled more sparsely rather than cut off at max_frames.
            interval = max(interval, duration / (max_frames * OVERSAMPLE))
        rate = float(stream.average_rate) if stream.average_rate else 30.0
        next_t = -1.0
        try:
            for frame in container.decode(stream):
                index = decoded
                decoded += 1
                t = float(frame.time) if frame.time is not None else index / rate
                if t + 1e-6 < next_t:
                    continue
                next_t = max(next_t + interval, t + interval) if interval > 0 else t
                rgb = _upright(
                    np.asarray(frame.to_ndarray(format="rgb24"), np.uint8),
                    float(frame.rotation or 0),
                )
                img = _resize(rgb, max_side)
                gray = np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), np.uint8)
                name = f"cand_{len(candidates):06d}.jpg"
                bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(out_dir / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                candidates.append(
                    {
                        "file": name,
                        "index": index,
                        "time": round(t, 4),
                        "sharpness": round(sharpness(gray), 3),
                    }
                )
                if duration > 0:
                    progress(0.95 * min(1.0, t / duration))
        except av.FFmpegError:
            # A truncated or partly corrupt upload: keep what decoded cleanly.
            if not candidates:
                raise InvalidInput(f"{video.name}: no decodable video frames") from None
            truncated = True
    if not candidates:
        raise InvalidInput(f"{video.name}: no decodable video frames")
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
        "decoded": decoded,
        "truncated": truncated,
        "dropped_blurry": [c["index"] for c, bad in zip(candidates, flags, strict=True) if bad],
        "frames": sharp,
    }
    (out_dir / "frames.json").write_text(json.dumps(manifest, indent=1))
    progress(1.0)
    return {
        "frames": len(sharp),
        "decoded": decoded,
        "width": width,
        "height": height,
        "dropped_blurry": len(manifest["dropped_blurry"]),
        "truncated": truncated,
    }
