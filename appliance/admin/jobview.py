"""What the jobs section shows of a job: its result assets, its scene facts as frames with
boxes, and the frames themselves (the perception stage's JPEGs in `jobs/{id}/`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from appliance.services import Services
from store import ingest
from store.errors import InvalidName, NotFound
from store.queue import Job

_RESULT_LABELS = {
    "splat_asset_id": "splat (.ply)",
    "thumbnail_asset_id": "thumbnail",
    "scene_facts_asset_id": "scene facts (JSON)",
}
_FRAME = re.compile(r"^\d{6}\.jpg$")
_MAX_FRAMES = 60


def results(job: Job) -> list[dict[str, str]]:
    """The assets a job produced: label and id, for download links."""
    out = []
    for key, value in (job.result or {}).items():
        if key.endswith("_asset_id") and isinstance(value, str):
            out.append({"label": _RESULT_LABELS.get(key, key), "key": key, "asset_id": value})
    return out


def frames_dir(svc: Services, job: Job) -> Path:
    """Where a perception job's sampled frames are (they may be pruned since)."""
    return svc.layout.jobs_dir / job.id / "perception" / "frames"


def frame_file(svc: Services, job: Job, index: int) -> Path:
    """One sampled frame's JPEG; NotFound when it is not on disk."""
    path = frames_dir(svc, job) / f"{index:06d}.jpg"
    if index < 0 or not path.is_file():
        raise NotFound(f"frame {index} of job {job.id} is not on disk")
    return path


def scene_frames(svc: Services, job: Job) -> dict[str, Any] | None:
    """The job's scene facts, frame by frame: each frame's boxes (track id, label, bbox).

    None when the job has no scene facts; `frames` lists at most 60 frames that have a box,
    each with `image` true when its JPEG is still on disk.
    """
    facts_id = (job.result or {}).get("scene_facts_asset_id")
    if not isinstance(facts_id, str):
        return None
    try:
        _, path = ingest.asset_file(svc.layout, svc.locations, facts_id)
        doc = json.loads(path.read_bytes())
    except (NotFound, InvalidName, OSError, ValueError):
        return {"error": "the scene facts asset cannot be read", "frames": [], "tracks": 0}
    by_frame: dict[int, list[dict[str, Any]]] = {}
    for track in doc.get("tracks", []):
        for obs in track.get("frames", []):
            by_frame.setdefault(int(obs["frame"]), []).append(
                {"track": track["id"], "label": track.get("label", ""), "bbox": obs["bbox"]}
            )
    video = doc.get("video", {})
    folder = frames_dir(svc, job)
    frames = [
        {"index": i, "boxes": by_frame[i], "image": (folder / f"{i:06d}.jpg").is_file()}
        for i in sorted(by_frame)[:_MAX_FRAMES]
    ]
    return {
        "error": "",
        "width": video.get("width", 1),
        "height": video.get("height", 1),
        "frame_count": video.get("frame_count", 0),
        "tracks": len(doc.get("tracks", [])),
        "model": (doc.get("model") or {}).get("name", ""),
        "frames": frames,
        "asset_id": facts_id,
    }
