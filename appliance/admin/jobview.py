"""What the jobs section shows of a job: its result assets, and its scene facts as the job's
frames with every track's mask, box and id drawn on them (`perception.overlay`).

The frames come from the job's `frames` asset (thumbnails it stored when it finished), or,
for a job that finished before it stored them, from its work dir while that still exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.services import Services
from perception import overlay
from perception.overlay import Image
from store import ingest
from store.errors import InvalidName, NotFound
from store.queue import Job

_RESULT_LABELS = {
    "splat_asset_id": "splat (.ply)",
    "thumbnail_asset_id": "thumbnail",
    "scene_facts_asset_id": "scene facts (JSON)",
    "frames_asset_id": "frames (ZIP of JPEGs)",
    "cameras_asset_id": "camera poses (cameras.json)",
}
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
    return svc.layout.job_dir(job.id) / "perception" / "frames"


def _facts(svc: Services, job: Job) -> dict[str, Any] | None:
    facts_id = (job.result or {}).get("scene_facts_asset_id")
    if not isinstance(facts_id, str):
        return None
    _, path = ingest.asset_file(svc.layout, svc.locations, facts_id)
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def _stored_frame(svc: Services, job: Job, index: int) -> Image | None:
    frames_id = (job.result or {}).get("frames_asset_id")
    if isinstance(frames_id, str):
        try:
            _, archive = ingest.asset_file(svc.layout, svc.locations, frames_id)
        except (NotFound, InvalidName):
            archive = None
        if archive is not None:
            found = overlay.read_thumbnail(archive, index)
            if found is not None:
                return found
    path = frames_dir(svc, job) / overlay.thumb_name(index)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    return None if image is None else np.asarray(image, np.uint8)


def frame_jpeg(svc: Services, job: Job, index: int, track: int | None = None) -> bytes:
    """Frame `index` of a perception job with its tracks drawn on it (JPEG bytes); `track`,
    when that track is in the frame, has its box outlined again, thick and white.

    NotFound when the job kept no such frame."""
    image = _stored_frame(svc, job, index) if index >= 0 else None
    if image is None:
        raise NotFound(f"frame {index} of job {job.id} is not kept")
    try:
        facts = _facts(svc, job)
    except (NotFound, InvalidName, OSError, ValueError):
        facts = None
    if not facts:
        return overlay.jpeg(image)
    drawn = overlay.draw(image, facts, index)
    if track is not None:
        drawn = _highlight(drawn, facts, index, track)
    return overlay.jpeg(drawn)


def _highlight(image: Image, facts: dict[str, Any], index: int, track: int) -> Image:
    """`image` with a thick white frame around `track`'s box in frame `index` (a cited one)."""
    video = facts.get("video", {})
    h, w = image.shape[:2]
    sx, sy = w / int(video.get("width", w)), h / int(video.get("height", h))
    thick = max(2, round(max(h, w) / 160))
    out = image.copy()
    for track_id, ob in overlay.observations(facts).get(index, []):
        if track_id != track:
            continue
        x, y, bw, bh = ob["bbox"]
        p0 = (round(x * sx) - thick, round(y * sy) - thick)
        p1 = (round((x + bw) * sx) + thick - 1, round((y + bh) * sy) + thick - 1)
        cv2.rectangle(out, p0, p1, (255, 255, 255), thick)
    return out


def _chosen(frames: list[dict[str, Any]], track: int | None, frame: int | None) -> int | None:
    """The shown frame a link asked for: `frame` if shown with `track` in it, else the shown
    frame holding `track` nearest to `frame` (its first one when no frame was named)."""
    if track is None:
        return frame if frame is not None and any(f["index"] == frame for f in frames) else None
    holding: list[int] = [int(f["index"]) for f in frames if track in f["tracks"]]
    if not holding:
        return None
    return min(holding, key=lambda i: abs(i - frame)) if frame is not None else holding[0]


def scene_frames(
    svc: Services, job: Job, track: int | None = None, frame: int | None = None
) -> dict[str, Any] | None:
    """The job's scene facts, frame by frame: which tracks each shown frame holds.

    None when the job has no scene facts; `frames` lists at most 60 frames that have a
    track (spread over the video), each with `image` true when the job kept that frame.
    `selected` is the shown frame a link asked for (`track` in it, nearest `frame`), if any.
    """
    try:
        doc = _facts(svc, job)
    except (NotFound, InvalidName, OSError, ValueError):
        return {
            "error": "the scene facts asset cannot be read",
            "frames": [],
            "tracks": 0,
            "track": track,
            "selected": None,
        }
    if doc is None:
        return None
    by_frame = overlay.observations(doc)
    video = doc.get("video", {})
    stored = isinstance((job.result or {}).get("frames_asset_id"), str)
    folder = frames_dir(svc, job)
    frames = [
        {
            "index": i,
            "tracks": sorted({track for track, _ in by_frame[i]}),
            "image": stored or (folder / overlay.thumb_name(i)).is_file(),
        }
        for i in overlay.shown_frames(doc, _MAX_FRAMES)
    ]
    return {
        "error": "",
        "width": video.get("width", 1),
        "height": video.get("height", 1),
        "frame_count": video.get("frame_count", 0),
        "tracks": len(doc.get("tracks", [])),
        "model": (doc.get("model") or {}).get("name", ""),
        "frames": frames,
        "asset_id": (job.result or {}).get("scene_facts_asset_id"),
        "track": track,
        "selected": _chosen(frames, track, frame),
    }
