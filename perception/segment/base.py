"""What every segmenter shares: the Tracker protocol, tracks.json, throttled progress.

A tracker reads a frames dir written by `perception.frames.extract_frames` and writes
`out_dir/tracks.json`:

    {"model": {"name", "version", "params"}, "width", "height", "frame_count",
     "tracks": [{"id", "frames": [{"frame", "bbox": [x, y, w, h], "area", "mask": RLE}],
                 "label"?, "score"?}]}

with frames in sampled-frame indices, pixels in the sampled frame size, and masks as
column-major RLE (see perception.scene_facts). Track ids run 1..N in order of appearance.
`label` and `score` are what a labelling segmenter would add (scene facts carry them on);
neither segmenter here labels, so `TrackBuilder` writes neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from perception.files import write_json
from perception.frames import load_frames
from perception.progress import Reporter, Unavailable
from perception.scene_facts import rle_encode_crop

STAGE = "segment"
TRACKS_JSON = "tracks.json"

Json = dict[str, Any]


class SegmenterUnavailable(Unavailable):
    """The configured segmenter cannot run here (package, checkpoint or GPU missing).

    A configuration problem: retrying the job will not help until the box is set up.
    """


class Tracker(Protocol):
    """Segments objects in every sampled frame and follows each under one id."""

    name: str

    def track(self, frames_dir: Path, out_dir: Path, reporter: Reporter) -> Json:
        """Write out_dir/tracks.json for the frames in `frames_dir`; return a small summary."""
        ...


class Progress:
    """Reports a stage's fraction every 1% or so, so a cancel is seen promptly but cheaply."""

    def __init__(self, reporter: Reporter, total: int, stage: str = STAGE) -> None:
        self.reporter, self.total, self.stage = reporter, max(1, total), stage
        self.last = -1.0

    def update(self, done: int) -> None:
        """`done` of `total` units are finished; may raise Cancelled."""
        fraction = done / self.total
        if fraction - self.last >= 0.01 or done >= self.total:
            self.last = fraction
            self.reporter.progress(self.stage, fraction)


@dataclass
class _Track:
    observations: list[Json] = field(default_factory=list)


class TrackBuilder:
    """Collects per-frame masks under raw track ids and writes the final tracks.json."""

    def __init__(self, width: int, height: int, *, min_area: int, min_track_frames: int) -> None:
        self.width, self.height = width, height
        self.min_area = max(1, min_area)
        self.min_track_frames = min_track_frames
        self.tracks: dict[int, _Track] = {}

    def add_crop(
        self, track_id: int, frame: int, crop: npt.NDArray[np.bool_], x0: int, y0: int
    ) -> bool:
        """Record a mask given as its crop at (x0, y0); False if it is too small to keep."""
        x, y, w, h = cv2.boundingRect(crop.view(np.uint8))
        if w == 0 or h == 0:
            return False
        tight = crop[y : y + h, x : x + w]
        area = int(np.count_nonzero(tight))
        if area < self.min_area:
            return False
        rle = rle_encode_crop(tight, x0 + x, y0 + y, self.height, self.width)
        ob = {"frame": frame, "bbox": [x0 + x, y0 + y, w, h], "area": area, "mask": rle}
        self.tracks.setdefault(track_id, _Track()).observations.append(ob)
        return True

    def add_mask(self, track_id: int, frame: int, mask: npt.NDArray[np.bool_]) -> bool:
        """Record a full-frame mask; False if it is empty or too small to keep."""
        x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
        if w == 0 or h == 0:
            return False
        return self.add_crop(track_id, frame, mask[y : y + h, x : x + w], x, y)

    def finish(self, model: Json, frame_count: int) -> Json:
        """The tracks.json document: short tracks dropped, ids renumbered 1..N."""
        kept = [
            (raw_id, t)
            for raw_id, t in self.tracks.items()
            if len(t.observations) >= self.min_track_frames
        ]
        for _, t in kept:
            t.observations.sort(key=lambda ob: int(ob["frame"]))
        kept.sort(key=lambda item: (item[1].observations[0]["frame"], item[0]))
        tracks: list[Json] = []
        for new_id, (_, t) in enumerate(kept, start=1):
            tracks.append({"id": new_id, "frames": t.observations})
        return {
            "model": model,
            "width": self.width,
            "height": self.height,
            "frame_count": frame_count,
            "tracks": tracks,
        }


def frame_list(frames_dir: Path) -> tuple[list[Path], int, int]:
    """The frame files of a frames dir in order, and the frame width and height."""
    doc = load_frames(frames_dir)
    paths = [frames_dir / rec["file"] for rec in doc["frames"]]
    return paths, int(doc["width"]), int(doc["height"])


def read_frame(path: Path) -> npt.NDArray[np.uint8]:
    """One frame as BGR; a missing or corrupt file is an error of the frames stage."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"frame {path} is missing or unreadable; re-run the frames stage")
    return np.asarray(image, dtype=np.uint8)


def write_tracks(out_dir: Path, doc: Json) -> Json:
    """Write tracks.json and return the stage summary."""
    write_json(out_dir / TRACKS_JSON, doc)
    return {
        "tracks": len(doc["tracks"]),
        "frames": doc["frame_count"],
        "model": f"{doc['model']['name']}/{doc['model']['version']}",
    }
