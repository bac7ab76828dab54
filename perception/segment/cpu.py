"""The CPU segmenter: things that move against their background, tracked, no weights.

What a person points at in a video is mostly what moves in it — people, vehicles, an
object held up to the camera — and what stays put is mostly background: walls, floor,
table top, sky. So the CPU default reports moving things, and tracks each one:

1. **Camera and shots** (`perception.segment.motion`): the camera's motion between sampled
   frames (a homography from corners tracked forwards and backwards), cuts where frames
   share no scene, and for each shot whether the camera stood still.
2. **Foreground**: MOG2 background subtraction in a fixed shot (shadows dropped); in a
   moving shot, what differs from the median of the neighbouring frames warped onto it by
   the camera's motion (what the camera's own motion does not explain).
3. **Blobs** (`perception.segment.blobs`): specks removed, the pieces of one body joined,
   planes (blobs spanning the frame) and blobs outside `min_area_frac`..`max_area_frac`
   dropped.
4. **Tracking**: each live track predicts where it will be (its own velocity, plus the
   camera's motion at its position); a blob that covers the predictions of two tracks
   (people walking together) is split between them, and pieces inside the prediction of
   one track alone (a body cut by a lamp post) are merged. Blobs are then assigned to
   tracks by `scipy.optimize.linear_sum_assignment` on mask IoU, centroid distance and
   colour. A track survives `max_gap` missed frames and ends at a cut; tracks seen in
   fewer than `min_track_frames` frames, or under `min_track_s` seconds' worth, are
   dropped as flicker.

A static object under a fixed camera is background here, not an object: the segmenter has
no notion of "thing" beyond motion. See docs/perception.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from perception.config import PerceptionConfig
from perception.frames import load_frames
from perception.progress import Reporter
from perception.segment.base import (
    Json,
    Progress,
    TrackBuilder,
    frame_list,
    read_frame,
    write_tracks,
)
from perception.segment.blobs import (
    BlobFinder,
    Box,
    Detection,
    box_overlap,
    make_detection,
    split_detection,
)
from perception.segment.motion import (
    PRIME_FRAMES,
    Change,
    Matrix,
    ShotForeground,
    change,
    find_cuts,
    grey,
    histogram,
    move_point,
    plan_shots,
    to_frame,
)
from perception.segment.subject import add_subjects

NAME = "cpu-classical"
VERSION = "3"
COLOUR_MAX = 40.0  # Lab distance beyond which two masks are not the same object
UNMATCHABLE = 1e6
SPLIT_COVER = 0.6  # a prediction this much inside a blob counts as inside it
STILL = Change(None, 0.0, 0.0)  # the first frame: nothing before it
MERGE_SLACK = 1.5  # merged pieces may span at most this much more than the prediction
MERGE_GAP = 0.4  # merged pieces lie at most this share of the prediction's smaller side apart


@dataclass
class _Live:
    raw_id: int
    det: Detection
    last_frame: int
    dx: float = 0.0  # camera motion at the track's position since it was last seen
    dy: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    hits: int = 1


def mask_iou(a: Detection, ax: int, ay: int, b: Detection) -> float:
    """IoU of mask `a` placed with its corner at (ax, ay) and mask `b` where it is."""
    ah, aw = a.crop.shape
    bh, bw = b.crop.shape
    x0, y0 = max(ax, b.x), max(ay, b.y)
    x1, y1 = min(ax + aw, b.x + bw), min(ay + ah, b.y + bh)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    inter = np.count_nonzero(
        a.crop[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
        & b.crop[y0 - b.y : y1 - b.y, x0 - b.x : x1 - b.x]
    )
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def box_gap(a: Box, b: Box) -> float:
    """How far apart two boxes are (0 when they touch or overlap), in pixels."""
    dx = max(a[0] - (b[0] + b[2]), b[0] - (a[0] + a[2]), 0.0)
    dy = max(a[1] - (b[1] + b[3]), b[1] - (a[1] + a[3]), 0.0)
    return max(dx, dy)


def near_pieces(pieces: list[Detection], ids: list[int], gap: float) -> list[int]:
    """The ids of the pieces chained to the largest one by gaps of at most `gap` px."""
    if len(pieces) < 2:
        return ids
    keep = {max(range(len(pieces)), key=lambda n: pieces[n].area)}
    grown = True
    while grown:
        grown = False
        for n, p in enumerate(pieces):
            if n not in keep and any(box_gap(p.box, pieces[m].box) <= gap for m in keep):
                keep.add(n)
                grown = True
    return [ids[n] for n in sorted(keep)]


class Associator:
    """Keeps live tracks and assigns each frame's detections to them."""

    def __init__(self, cfg: PerceptionConfig) -> None:
        self.match_iou = cfg.match_iou
        self.max_gap = cfg.max_gap
        self.live: list[_Live] = []
        self.next_id = 1

    def cut(self) -> None:
        """A new shot: nothing seen before it continues into it."""
        self.live = []

    def camera(self, h: Matrix) -> None:
        """The camera moved by `h` (frame pixels) since the previous frame."""
        for t in self.live:
            px, py = self._at(t, t.last_frame)
            nx, ny = move_point(h, px, py)
            t.dx += nx - px
            t.dy += ny - py

    def step(
        self, frame: int, dets: list[Detection], lab: npt.NDArray[np.float32]
    ) -> list[tuple[int, Detection]]:
        """Assign `dets` (seen at `frame`) to tracks; return (raw track id, detection) pairs."""
        self.live = [t for t in self.live if frame - t.last_frame <= self.max_gap + 1]
        dets = self._merge(self._split(dets, frame, lab), frame, lab)
        matched: dict[int, int] = {}
        if self.live and dets:
            cost = np.full((len(self.live), len(dets)), UNMATCHABLE)
            # Cheap gates for all pairs at once; masks are compared only where they pass.
            t_area = np.array([t.det.area for t in self.live], dtype=np.float64)[:, None]
            d_area = np.array([d.area for d in dets], dtype=np.float64)[None, :]
            t_col = np.stack([t.det.colour for t in self.live])[:, None, :]
            d_col = np.stack([d.colour for d in dets])[None, :, :]
            colour = np.linalg.norm(t_col - d_col, axis=2)
            sizes_ok = np.minimum(t_area, d_area) >= 0.35 * np.maximum(t_area, d_area)
            for i, j in zip(*np.nonzero(sizes_ok & (colour <= COLOUR_MAX)), strict=True):
                cost[i, j] = self._cost(self.live[i], dets[j], frame, float(colour[i, j]))
            rows, cols = linear_sum_assignment(cost)
            matched = {int(c): int(r) for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1e5}
        out: list[tuple[int, Detection]] = []
        for j, d in enumerate(dets):
            if j in matched:
                t = self.live[matched[j]]
                self._update(t, d, frame)
            else:
                t = _Live(self.next_id, d, frame)
                self.next_id += 1
                self.live.append(t)
            out.append((t.raw_id, d))
        return out

    def _at(self, t: _Live, frame: int) -> tuple[float, float]:
        """The offset of a track's last mask to where it should be at `frame`."""
        gap = frame - t.last_frame
        return t.dx + t.vx * gap, t.dy + t.vy * gap

    def _predicted_box(self, t: _Live, frame: int) -> Box:
        dx, dy = self._at(t, frame)
        x, y, w, h = t.det.box
        return x + dx, y + dy, w, h

    def _split(
        self, dets: list[Detection], frame: int, lab: npt.NDArray[np.float32]
    ) -> list[Detection]:
        # Only tracks with a velocity have a prediction worth splitting a blob by.
        steady = [t for t in self.live if t.hits >= 2]
        out: list[Detection] = []
        for d in dets:
            inside = []
            for t in steady:
                box = self._predicted_box(t, frame)
                if box_overlap(box, d.box) >= SPLIT_COVER * box[2] * box[3]:
                    inside.append((t, box))
            biggest = max((t.det.area for t, _ in inside), default=0)
            if len(inside) >= 2 and d.area > 1.3 * biggest:
                out.extend(p for p in split_detection(d, [b for _, b in inside], lab) if p)
            else:
                out.append(d)
        return out

    def _merge(
        self, dets: list[Detection], frame: int, lab: npt.NDArray[np.float32]
    ) -> list[Detection]:
        boxes = [self._predicted_box(t, frame) for t in self.live if t.hits >= 2]
        owners: dict[int, list[int]] = {}
        for j, d in enumerate(dets):
            # Which predictions hold most of this piece; a piece shared by two is left alone.
            holders = [k for k, b in enumerate(boxes) if box_overlap(b, d.box) > 0.5 * d.area]
            if len(holders) == 1:
                owners.setdefault(holders[0], []).append(j)
        gone: set[int] = set()
        merged: list[Detection] = []
        for k, js in owners.items():
            # Only pieces a small gap apart (the width of a lamp post across a body) are one
            # thing; two people who were one blob and walk apart are two.
            js = near_pieces([dets[j] for j in js], js, MERGE_GAP * min(boxes[k][2], boxes[k][3]))
            if len(js) < 2:
                continue
            x0 = min(dets[j].x for j in js)
            y0 = min(dets[j].y for j in js)
            x1 = max(dets[j].x + dets[j].crop.shape[1] for j in js)
            y1 = max(dets[j].y + dets[j].crop.shape[0] for j in js)
            bw, bh = boxes[k][2], boxes[k][3]
            if (x1 - x0) > MERGE_SLACK * bw or (y1 - y0) > MERGE_SLACK * bh:
                continue
            union = np.zeros((y1 - y0, x1 - x0), dtype=bool)
            for j in js:
                d = dets[j]
                h, w = d.crop.shape
                union[d.y - y0 : d.y - y0 + h, d.x - x0 : d.x - x0 + w] |= d.crop
            one = make_detection(union, x0, y0, lab)
            if one is not None:
                merged.append(one)
                gone.update(js)
        return [d for j, d in enumerate(dets) if j not in gone] + merged

    def _cost(self, t: _Live, d: Detection, frame: int, colour: float) -> float:
        a = t.det
        guesses = [self._at(t, frame)]
        if t.hits == 1:
            # Velocity unknown yet: also try "still where it was" (with the camera), and
            # allow a wider reach.
            guesses.append((t.dx, t.dy))
        reach = (0.6 if t.hits > 1 else 1.0) * math.sqrt(max(a.area, d.area))
        best = UNMATCHABLE
        for dx, dy in guesses:
            iou = mask_iou(a, round(a.x + dx), round(a.y + dy), d)
            dist = math.hypot(a.cx + dx - d.cx, a.cy + dy - d.cy)
            if iou < self.match_iou and dist > reach:
                continue
            cost = (1.0 - iou) + 0.5 * min(1.0, dist / reach) + 0.5 * colour / COLOUR_MAX
            best = min(best, cost)
        return best

    def _update(self, t: _Live, d: Detection, frame: int) -> None:
        gap = frame - t.last_frame
        # Velocity relative to the scene, so a camera pan is not mistaken for object motion.
        vx = (d.cx - t.det.cx - t.dx) / gap
        vy = (d.cy - t.det.cy - t.dy) / gap
        if t.hits == 1:
            t.vx, t.vy = vx, vy
        else:
            t.vx, t.vy = 0.5 * (t.vx + vx), 0.5 * (t.vy + vy)
        t.det, t.last_frame = d, frame
        t.dx = t.dy = 0.0
        t.hits += 1


def sampled_rate(frames_doc: Json) -> float:
    """Sampled frames per second as the timestamps have them (a video that drops frames
    is sampled sparser than the asked-for rate)."""
    records = frames_doc.get("frames", [])
    asked = float(frames_doc.get("fps") or 5.0)
    if len(records) < 2:
        return asked
    span = float(records[-1]["t"]) - float(records[0]["t"])
    return min(asked, (len(records) - 1) / span) if span > 0 else asked


class CpuTracker:
    """The default segmenter: moving things + Hungarian tracking, on one CPU core."""

    name = NAME

    def __init__(self, cfg: PerceptionConfig) -> None:
        self.cfg = cfg

    def track(self, frames_dir: Path, out_dir: Path, reporter: Reporter) -> Json:
        """Segment and track every frame in `frames_dir`; write out_dir/tracks.json."""
        paths, width, height = frame_list(frames_dir)
        cfg = self.cfg
        scale = min(1.0, cfg.work_side / max(width, height))
        work = max(1, round(width * scale)), max(1, round(height * scale))
        fx, fy = width / work[0], height / work[1]
        sampled_fps = sampled_rate(load_frames(frames_dir))
        progress = Progress(reporter, 2 * len(paths))
        progress.update(0)

        def shrink(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
            if (image.shape[1], image.shape[0]) == work:
                return image
            return np.asarray(cv2.resize(image, work, interpolation=cv2.INTER_AREA))

        def load(i: int) -> npt.NDArray[np.uint8]:
            return shrink(read_frame(paths[i]))

        # Pass 1: the camera's motion between frames, hence cuts and fixed shots.
        changes: list[Change] = []
        prev: tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]] | None = None
        for i in range(len(paths)):
            image = load(i)
            cur = grey(image), histogram(image)
            changes.append(change(prev[0], cur[0], prev[1], cur[1]) if prev else STILL)
            prev = cur
            progress.update(i + 1)
        motions = [c.motion for c in changes]
        shots = plan_shots(motions, find_cuts(changes), cfg.still_frac * max(work), work)

        # Pass 2: foreground, blobs, tracks.
        blobs = BlobFinder(
            work,
            (width, height),
            min_area_frac=cfg.min_blob_frac,
            max_area_frac=cfg.max_area_frac,
            join_px=max(1, round(cfg.join_frac * max(work))),
            min_contrast=cfg.min_contrast,
        )
        assoc = Associator(cfg)
        builder = TrackBuilder(
            width,
            height,
            min_area=int(cfg.min_blob_frac * width * height),
            min_track_frames=max(cfg.min_track_frames, math.ceil(cfg.min_track_s * sampled_fps)),
        )
        # MOG2 takes a new colour into the background once the old one's weight falls
        # under its background ratio (0.9), after about 0.105 * history frames.
        history = max(PRIME_FRAMES, round(cfg.background_s * sampled_fps / 0.105))
        for shot in shots:
            assoc.cut()
            foreground = ShotForeground(
                shot,
                load,
                motions,
                history=history,
                var_threshold=cfg.background_threshold,
                motion_grey=cfg.motion_threshold,
            )
            for i in range(shot.start, shot.stop):
                image = read_frame(paths[i])
                fg = foreground(i, shrink(image))
                motion = motions[i]
                if not shot.fixed and i > shot.start and motion is not None:
                    assoc.camera(to_frame(motion, fx, fy))
                lab = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2Lab), dtype=np.float32)
                dets = blobs.find(fg, lab) if fg is not None else []
                for raw_id, det in assoc.step(i, dets, lab):
                    builder.add_crop(raw_id, i, det.crop, det.x, det.y)
                progress.update(len(paths) + i + 1)
        if cfg.find_subject:
            add_subjects(builder, shots, changes, load, (width, height), work, blobs)
        model = {"name": NAME, "version": VERSION, "params": self.params()}
        return write_tracks(out_dir, builder.finish(model, len(paths)))

    def params(self) -> Json:
        """The settings that shaped the result, recorded with it."""
        c = self.cfg
        return {
            "work_side": c.work_side,
            "min_blob_frac": c.min_blob_frac,
            "max_area_frac": c.max_area_frac,
            "still_frac": c.still_frac,
            "join_frac": c.join_frac,
            "min_contrast": c.min_contrast,
            "background_s": c.background_s,
            "background_threshold": c.background_threshold,
            "motion_threshold": c.motion_threshold,
            "match_iou": c.match_iou,
            "max_gap": c.max_gap,
            "min_track_frames": c.min_track_frames,
            "min_track_s": c.min_track_s,
            "find_subject": c.find_subject,
        }
