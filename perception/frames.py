"""The perception pipeline's frames stage: sampled frames as JPEGs plus `frames.json`.

`extract_frames` writes `out_dir/000000.jpg, 000001.jpg, ...` (numbered from 0 so SAM 2's
frame loader reads the folder as it is) and `out_dir/frames.json`:

    {"source": {VideoInfo}, "fps": sampled fps, "width": w, "height": h, "truncated": bool,
     "frames": [{"index": i, "file": "000000.jpg", "source_frame": n, "t": seconds,
                 "sharpness": variance of the Laplacian}, ...]}

Decoding (refusals, picking by timestamp, display orientation, sharpness) is
`perception.video`'s, the decoder the splat pipeline's frames stage uses too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2

from perception.files import write_json
from perception.progress import Reporter
from perception.video import Pass, decode, output_size, probe

FRAMES_JSON = "frames.json"
JPEG_QUALITY = 92


def extract_frames(
    video: Path,
    out_dir: Path,
    *,
    fps: float,
    max_side: int,
    reporter: Reporter,
    stage: str = "frames",
) -> dict[str, Any]:
    """Sample frames at `fps` into `out_dir` as JPEGs plus frames.json; return a summary."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    info = probe(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    reporter.progress(stage, 0.0)
    out_w, out_h = output_size(info.width, info.height, max_side)
    records: list[dict[str, Any]] = []
    result = Pass()
    last_reported = 0.0
    for picked in decode(video, info, 1.0 / fps, max_side, result):
        name = f"{len(records):06d}.jpg"
        jpeg = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        if not cv2.imwrite(str(out_dir / name), picked.image, jpeg):
            raise OSError(f"could not write {out_dir / name}")
        records.append(
            {
                "index": len(records),
                "file": name,
                "source_frame": picked.source_frame,
                "t": round(picked.t, 4),
                "sharpness": round(picked.sharpness, 3),
            }
        )
        if info.duration > 0 and picked.t / info.duration - last_reported >= 0.01:
            last_reported = min(1.0, picked.t / info.duration)
            reporter.progress(stage, last_reported)
    doc = {
        "source": info.to_json(),
        "fps": fps if fps < info.fps or info.fps <= 0 else info.fps,
        "width": out_w,
        "height": out_h,
        "truncated": result.truncated,
        "frames": records,
    }
    write_json(out_dir / FRAMES_JSON, doc)
    reporter.progress(stage, 1.0)
    return {
        "frames": len(records),
        "width": out_w,
        "height": out_h,
        "fps": doc["fps"],
        "source_fps": info.fps,
        "duration": info.duration,
        "truncated": result.truncated,
    }


def load_frames(frames_dir: Path) -> dict[str, Any]:
    """The frames.json that `extract_frames` wrote in `frames_dir`."""
    doc: dict[str, Any] = json.loads((frames_dir / FRAMES_JSON).read_text())
    return doc


def frame_paths(frames_dir: Path) -> list[Path]:
    """The frame JPEGs in order."""
    return [frames_dir / rec["file"] for rec in load_frames(frames_dir)["frames"]]


__all__ = ["FRAMES_JSON", "extract_frames", "frame_paths", "load_frames"]
