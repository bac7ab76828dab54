"""The CPU segmenter: classical region segmentation plus Hungarian tracking, no weights.

Per frame (at `work_side`, about 320 px): pixels whose local Lab colour spread is low are
"uniform surface"; texture and edges are not. Connected uniform regions between
`min_area_frac` and `max_area_frac` of the frame are the objects: a painted box, a door, a
bucket, a panel. Textured clutter (carpet, gravel, foliage) is never reported, and two
surfaces of different colour are split at the edge between them.

Tracking: each live track predicts where its mask will be (its own velocity plus the camera's
pan, from phase correlation of consecutive frames), and detections are assigned to tracks by
`scipy.optimize.linear_sum_assignment` on a cost of mask IoU, centroid distance and colour.
A track survives `max_gap` missed frames; tracks shorter than `min_track_frames` are dropped.
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
from perception.progress import Reporter
from perception.segment.base import (
    Json,
    Progress,
    TrackBuilder,
    frame_list,
    read_frame,
    write_tracks,
)

NAME = "cpu-classical"
VERSION = "1"
WINDOW = 5  # local-spread window at work size; edges cost WINDOW // 2 px each side
COLOUR_MAX = 30.0  # Lab distance beyond which two masks are not the same object
UNMATCHABLE = 1e6

BoolArray = npt.NDArray[np.bool_]


@dataclass
class Detection:
    """One region in one frame, in frame pixels."""

    x: int
    y: int
    crop: BoolArray  # mask over the bbox (x, y, w, h)
    area: int
    cx: float
    cy: float
    colour: npt.NDArray[np.float32]  # mean Lab


@dataclass
class _Live:
    raw_id: int
    det: Detection
    last_frame: int
    shift_at_last: tuple[float, float]
    vx: float = 0.0
    vy: float = 0.0
    hits: int = 1


class Segmenter:
    """Per-frame uniform-region segmentation."""

    def __init__(self, cfg: PerceptionConfig, width: int, height: int) -> None:
        self.width, self.height = width, height
        scale = min(1.0, cfg.work_side / max(width, height))
        self.sw, self.sh = max(1, round(width * scale)), max(1, round(height * scale))
        self.fx, self.fy = width / self.sw, height / self.sh
        small_area = self.sw * self.sh
        # Uniform cores are smaller than their objects (the spread window eats the edge), so
        # cores are only pre-filtered here; the grown mask is held to min_area_frac itself.
        self.min_core = max(4, int(0.25 * cfg.min_area_frac * small_area))
        self.min_area = max(1, int(cfg.min_area_frac * width * height))
        self.max_area = int(cfg.max_area_frac * small_area)
        self.var_limit = cfg.texture_threshold**2
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self.grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * (WINDOW // 2) + 3,) * 2)
        self.edge_min = 2.0 * cfg.texture_threshold
        self.hann = cv2.createHanningWindow((self.sw, self.sh), cv2.CV_32F)
        self.prev_grey: npt.NDArray[np.float32] | None = None

    def small(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """The frame at work size."""
        if (image.shape[1], image.shape[0]) == (self.sw, self.sh):
            return image
        out = cv2.resize(image, (self.sw, self.sh), interpolation=cv2.INTER_AREA)
        return np.asarray(out, dtype=np.uint8)

    def camera_shift(self, small: npt.NDArray[np.uint8]) -> tuple[float, float]:
        """How far the scene moved since the previous frame (frame pixels); 0 if unsure."""
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
        prev, self.prev_grey = self.prev_grey, grey
        if prev is None:
            return 0.0, 0.0
        (dx, dy), response = cv2.phaseCorrelate(prev, grey, self.hann)
        # A weak peak means no dominant motion (a blank wall, a big object moving): trust
        # the tracks' own velocities instead.
        if response < 0.1:
            return 0.0, 0.0
        return float(dx) * self.fx, float(dy) * self.fy

    def detect(self, small: npt.NDArray[np.uint8]) -> list[Detection]:
        """The uniform regions of one frame."""
        lab = cv2.cvtColor(small, cv2.COLOR_BGR2Lab).astype(np.float32)
        mean = cv2.blur(lab, (WINDOW, WINDOW))
        spread = cv2.blur(lab * lab, (WINDOW, WINDOW)) - mean * mean
        uniform = (spread.sum(axis=2) < self.var_limit).astype(np.uint8)
        # Opening cuts one-pixel bridges between regions and drops specks in texture.
        uniform = cv2.morphologyEx(uniform, cv2.MORPH_OPEN, self.kernel)
        count, found, stats, _ = cv2.connectedComponentsWithStats(uniform, connectivity=4)
        labels = np.asarray(found, dtype=np.int32)
        out: list[Detection] = []
        for k in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[k])
            if area < self.min_core or area > self.max_area:
                continue
            det = self._detection(labels, lab, k, x, y, w, h)
            if det.area >= self.min_area:
                out.append(det)
        return out

    def _detection(
        self,
        labels: npt.NDArray[np.int32],
        lab: npt.NDArray[np.float32],
        k: int,
        x: int,
        y: int,
        w: int,
        h: int,
    ) -> Detection:
        # The spread window took a band off the region's edge; give back the band pixels whose
        # colour is nearer the region's than the surroundings' (a half-way edge).
        r = WINDOW // 2 + 1
        x0, y0 = max(0, x - r - 1), max(0, y - r - 1)
        x1, y1 = min(self.sw, x + w + r + 1), min(self.sh, y + h + r + 1)
        region = (labels[y0:y1, x0:x1] == k).astype(np.uint8)
        patch = lab[y0:y1, x0:x1]
        colour = np.array(cv2.mean(patch, mask=region)[:3], dtype=np.float32)
        grown = cv2.dilate(region, self.grow)
        ring = cv2.dilate(grown, self.kernel) - grown
        if ring.any():
            around = np.array(cv2.mean(patch, mask=ring)[:3], dtype=np.float32)
            limit = max(self.edge_min, 0.5 * float(np.linalg.norm(colour - around)))
        else:
            limit = self.edge_min
        near = np.linalg.norm(patch - colour, axis=2) < limit
        region = region | (grown.astype(bool) & near).view(np.uint8)
        # Back to frame pixels: scale the crop, threshold the interpolated edge.
        fx0, fy0 = math.floor(x0 * self.fx), math.floor(y0 * self.fy)
        fx1 = min(self.width, math.ceil(x1 * self.fx))
        fy1 = min(self.height, math.ceil(y1 * self.fy))
        if (fx1 - fx0, fy1 - fy0) != region.shape[::-1]:
            region = cv2.resize(
                region * 255, (fx1 - fx0, fy1 - fy0), interpolation=cv2.INTER_LINEAR
            )
            crop = region > 127
        else:
            crop = region > 0
        ys, xs = np.nonzero(crop)
        if xs.size == 0:  # a sliver that vanished in the upscale; dropped by the area check
            xs = ys = np.zeros(1, dtype=np.intp)
            crop = np.zeros_like(crop)
        return Detection(
            x=fx0,
            y=fy0,
            crop=crop,
            area=int(np.count_nonzero(crop)),
            cx=fx0 + float(xs.mean()),
            cy=fy0 + float(ys.mean()),
            colour=colour,
        )


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


class Associator:
    """Keeps live tracks and assigns each frame's detections to them."""

    def __init__(self, cfg: PerceptionConfig) -> None:
        self.match_iou = cfg.match_iou
        self.max_gap = cfg.max_gap
        self.live: list[_Live] = []
        self.next_id = 1
        self.shift = (0.0, 0.0)  # camera motion accumulated since the first frame

    def step(
        self, frame: int, dets: list[Detection], camera: tuple[float, float]
    ) -> list[tuple[int, Detection]]:
        """Assign `dets` (seen at `frame`) to tracks; return (raw track id, detection) pairs."""
        self.shift = (self.shift[0] + camera[0], self.shift[1] + camera[1])
        self.live = [t for t in self.live if frame - t.last_frame <= self.max_gap + 1]
        matched: dict[int, int] = {}
        if self.live and dets:
            cost = np.full((len(self.live), len(dets)), UNMATCHABLE)
            # Cheap gates for all pairs at once; masks are compared only where they pass.
            t_area = np.array([t.det.area for t in self.live], dtype=np.float64)[:, None]
            d_area = np.array([d.area for d in dets], dtype=np.float64)[None, :]
            t_col = np.stack([t.det.colour for t in self.live])[:, None, :]
            d_col = np.stack([d.colour for d in dets])[None, :, :]
            colour = np.linalg.norm(t_col - d_col, axis=2)
            sizes_ok = np.minimum(t_area, d_area) >= 0.4 * np.maximum(t_area, d_area)
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
                t = _Live(self.next_id, d, frame, self.shift)
                self.next_id += 1
                self.live.append(t)
            out.append((t.raw_id, d))
        return out

    def _predicted(self, t: _Live, frame: int) -> tuple[float, float]:
        gap = frame - t.last_frame
        return (
            self.shift[0] - t.shift_at_last[0] + t.vx * gap,
            self.shift[1] - t.shift_at_last[1] + t.vy * gap,
        )

    def _cost(self, t: _Live, d: Detection, frame: int, colour: float) -> float:
        a = t.det
        guesses = [self._predicted(t, frame)]
        if t.hits == 1:
            # Velocity unknown yet: also try "moved with the camera" (a held object, or a
            # pan the phase correlation missed), and allow a wider reach.
            guesses.append((0.0, 0.0))
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
        cam_x = self.shift[0] - t.shift_at_last[0]
        cam_y = self.shift[1] - t.shift_at_last[1]
        vx = (d.cx - t.det.cx - cam_x) / gap
        vy = (d.cy - t.det.cy - cam_y) / gap
        if t.hits == 1:
            t.vx, t.vy = vx, vy
        else:
            t.vx, t.vy = 0.5 * (t.vx + vx), 0.5 * (t.vy + vy)
        t.det, t.last_frame, t.shift_at_last = d, frame, self.shift
        t.hits += 1


class CpuTracker:
    """The default segmenter: classical regions + Hungarian tracking, on one CPU core."""

    name = NAME

    def __init__(self, cfg: PerceptionConfig) -> None:
        self.cfg = cfg

    def track(self, frames_dir: Path, out_dir: Path, reporter: Reporter) -> Json:
        """Segment and track every frame in `frames_dir`; write out_dir/tracks.json."""
        paths, width, height = frame_list(frames_dir)
        seg = Segmenter(self.cfg, width, height)
        assoc = Associator(self.cfg)
        builder = TrackBuilder(
            width,
            height,
            min_area=int(self.cfg.min_area_frac * width * height),
            min_track_frames=self.cfg.min_track_frames,
        )
        progress = Progress(reporter, len(paths))
        progress.update(0)
        for i, path in enumerate(paths):
            small = seg.small(read_frame(path))
            camera = seg.camera_shift(small)
            for raw_id, det in assoc.step(i, seg.detect(small), camera):
                builder.add_crop(raw_id, i, det.crop, det.x, det.y)
            progress.update(i + 1)
        model = {"name": NAME, "version": VERSION, "params": self.params()}
        return write_tracks(out_dir, builder.finish(model, len(paths)))

    def params(self) -> Json:
        """The settings that shaped the result, recorded with it."""
        c = self.cfg
        return {
            "work_side": c.work_side,
            "texture_threshold": c.texture_threshold,
            "min_area_frac": c.min_area_frac,
            "max_area_frac": c.max_area_frac,
            "match_iou": c.match_iou,
            "max_gap": c.max_gap,
            "min_track_frames": c.min_track_frames,
        }
