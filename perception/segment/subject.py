"""The subject of a hand-held shot: the one thing the camera keeps in view while it moves.

Nothing moves on its own in a hand-held walk around a tree trunk, or round an object on a
table, so the moving-things foreground finds nothing there; yet the person filming points
at one thing all along. Its evidence is how the camera moved: it kept that thing in view.

- **Scene runs.** A moving shot, and consecutive one-frame shots ("cuts": photos taken
  around one subject share few corners frame to frame) whose colours stay alike
  (Bhattacharyya distance under SAME_SCENE_HIST), are one run. Fixed shots of two frames or
  more never are: a fixed camera points at nothing in particular.
- **Evidence.** Each frame's SIFT features are matched to those of the run's frames a few
  steps away (ratio test, then a RANSAC fundamental matrix: matches that agree on one rigid
  scene). Across a cut every such match is evidence: the rest of the view changed, and what
  was seen again from another place is what the camera went round. Inside a moving shot,
  the camera's own motion (the shot's homographies) says where each point should have gone;
  a matched point that stayed put in the frame while the scene around it swept past by at
  least SWEEP_FRAC of the frame is the subject's, one the homography explains is background.
- **Region.** The evidence points of one frame, with strays far from their median dropped,
  are the subject's convex hull, widened by HULL_PAD; kept only when it is between the
  blob size limits and not a plane (`blobs.BlobFinder.is_plane`).
- **One track per run**, added by `cpu.CpuTracker` only when no moving thing was tracked in
  the run (what moves is what a person points at), and dropped like any track when it lasts
  under `min_track_s`.

Failure cases (docs/perception.md): a subject with no texture gives no features; the hull
is the textured part of the subject, not its outline; two subjects kept in view at once are
one region; in a slow pan with nothing fixated the sweep is too small to tell anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from perception.segment.base import TrackBuilder
from perception.segment.blobs import BlobFinder
from perception.segment.motion import Change, Matrix, Shot

BoolArray = npt.NDArray[np.bool_]
Points = npt.NDArray[np.float32]

SUBJECT_SIDE = 320  # features are found at most at this longer side
FEATURES = 500
RATIO = 0.8  # Lowe's ratio test
RANSAC_PX = 2.0  # at SUBJECT_SIDE
MIN_MATCHES = 15  # fewer verified matches than this: random agreement, not one scene
MIN_POINTS = 10  # evidence points a frame needs to have a subject region
SAME_SCENE_HIST = 0.4  # cut frames whose colours differ less than this show one scene
CUT_OFFSETS = (1, 2, 3)  # a cut frame is matched to the frames this many steps away
SHOT_OFFSETS = (1, 3, 5)  # inside a moving shot (the sweep must be large enough to tell)
SWEEP_FRAC = 0.05  # the scene must sweep this share of the longer side for a point to stay
STAY = 0.2  # a point that moved under this share of the sweep around it stayed put
EXPLAINED_PX = 3.0  # a point this close to where the camera's motion puts it is background
CORE = 0.85  # the region is the hull of this share of the points nearest their median
HULL_PAD = 0.01  # the hull is widened by this share of the longer side


@dataclass(frozen=True)
class Run:
    """Frames [start, stop) of one scene seen by a moving camera, and the shots in it."""

    start: int
    stop: int
    shots: tuple[Shot, ...]

    def shot_of(self, i: int) -> Shot:
        """The shot frame `i` belongs to."""
        return next(s for s in self.shots if s.start <= i < s.stop)


def scene_runs(shots: list[Shot], changes: list[Change]) -> list[Run]:
    """Runs of frames that show one scene to a moving camera: moving shots, joined with
    neighbouring one-frame shots when their colours stay alike."""
    runs: list[list[Shot]] = []
    for shot in shots:
        single = shot.stop - shot.start == 1
        if shot.fixed and not single:
            runs.append([])  # a fixed shot ends a run
            continue
        prev = runs[-1] if runs else []
        alike = changes[shot.start].colours < SAME_SCENE_HIST
        # Two moving shots are split by a cut the camera's motion could not bridge; only a
        # one-frame shot on either side (a photo) is joined by colour alone.
        joins = bool(prev) and alike and (single or prev[-1].stop - prev[-1].start == 1)
        if joins:
            prev.append(shot)
        else:
            runs.append([shot])
    out = [Run(r[0].start, r[-1].stop, tuple(r)) for r in runs if r]
    return [r for r in out if r.stop - r.start >= 2]


def chain(motions: list[Matrix | None], i: int, j: int) -> Matrix:
    """The homography taking frame i's pixels to frame j's (same shot; `motions[n]` takes
    frame n-1 to n; one it could not tell counts as still)."""
    h = np.eye(3)
    for n in range(i + 1, j + 1):
        m = motions[n]
        h = (np.eye(3) if m is None else m) @ h
    for n in range(j + 1, i + 1):
        m = motions[n]
        h = (np.eye(3) if m is None else np.linalg.inv(m)) @ h
    return np.asarray(h, dtype=np.float64)


class SubjectFinder:
    """Finds the subject of each scene run, frame by frame, at work size."""

    def __init__(
        self,
        load: Callable[[int], npt.NDArray[np.uint8]],
        motions: list[Matrix | None],
        work: tuple[int, int],
        *,
        min_area: float,
        max_area: float,
        is_plane: Callable[[int, int, int, int], bool],
    ) -> None:
        self.load, self.motions = load, motions
        self.work = work
        self.scale = min(1.0, SUBJECT_SIDE / max(work))
        self.min_area, self.max_area, self.is_plane = min_area, max_area, is_plane
        self.sift = cv2.SIFT_create(nfeatures=FEATURES)  # type: ignore[attr-defined]
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)
        self.features: dict[int, tuple[Points, npt.NDArray[np.float32] | None]] = {}
        self.pairs: dict[tuple[int, int, bool], tuple[Points, Points]] = {}

    def regions(self, run: Run) -> dict[int, BoolArray]:
        """The subject's mask (work size) in each frame of `run` where it can be told."""
        out: dict[int, BoolArray] = {}
        for i in range(run.start, run.stop):
            pts = self.evidence(run, i)
            mask = self.region(pts) if len(pts) >= MIN_POINTS else None
            if mask is not None:
                out[i] = mask
        self.features.clear()
        self.pairs.clear()
        return out

    def evidence(self, run: Run, i: int) -> Points:
        """Points of frame `i` (work px) that the camera kept in view: the subject's."""
        shot = run.shot_of(i)
        found: list[Points] = []
        for d in sorted({*CUT_OFFSETS, *SHOT_OFFSETS}):
            for j in (i - d, i + d):
                if not run.start <= j < run.stop:
                    continue
                if shot.start <= j < shot.stop:
                    if d in SHOT_OFFSETS:
                        found.append(self.kept(i, j, chain(self.motions, i, j)))
                elif d in CUT_OFFSETS:
                    found.append(self.kept(i, j, None))
        return np.concatenate(found) if found else np.zeros((0, 2), np.float32)

    def kept(self, i: int, j: int, h: Matrix | None) -> Points:
        """Points of frame i matched in frame j that are evidence of a subject."""
        if h is None:
            return self.matches(i, j)[0]
        # Inside a shot the camera's motion is known, so no rigid check: it would keep the
        # background, which is the larger part, and drop the subject as its outliers.
        p, q = self.matches(i, j, rigid=False)
        if len(p) == 0:
            return p
        # The camera's motion says where a background point goes; the subject is the part
        # of the scene that did not go there but stayed where it was in the frame.
        expect = cv2.perspectiveTransform(p.reshape(-1, 1, 2), h).reshape(-1, 2)
        sweep = np.linalg.norm(expect - p, axis=1)
        moved = np.linalg.norm(q - p, axis=1)
        off = np.linalg.norm(q - expect, axis=1)
        if float(np.median(sweep)) < SWEEP_FRAC * max(self.work):
            return np.zeros((0, 2), np.float32)
        stay = (moved < STAY * sweep) & (off > np.maximum(EXPLAINED_PX / self.scale, 0.5 * sweep))
        return np.asarray(p[stay], dtype=np.float32)

    def matches(self, i: int, j: int, rigid: bool = True) -> tuple[Points, Points]:
        """Matches between frames i and j: (points in i, points in j), work px; `rigid`:
        only those one RANSAC fundamental matrix agrees with (one rigid scene)."""
        if (j, i, rigid) in self.pairs:
            q, p = self.pairs[(j, i, rigid)]
            return p, q
        if (i, j, rigid) not in self.pairs:
            # The ratio test is not symmetric: the direction that keeps more wins.
            there, back = self._match(i, j, rigid), self._match(j, i, rigid)
            best = there if len(there[0]) >= len(back[0]) else (back[1], back[0])
            self.pairs[(i, j, rigid)] = best
        return self.pairs[(i, j, rigid)]

    def _match(self, i: int, j: int, rigid: bool) -> tuple[Points, Points]:
        (ki, di), (kj, dj) = self._features(i), self._features(j)
        empty = np.zeros((0, 2), np.float32)
        if di is None or dj is None or len(ki) < MIN_MATCHES or len(kj) < MIN_MATCHES:
            return empty, empty
        pairs = self.matcher.knnMatch(di, dj, k=2)
        good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
        if len(good) < MIN_MATCHES:
            return empty, empty
        p = ki[[m.queryIdx for m in good]]
        q = kj[[m.trainIdx for m in good]]
        if not rigid:
            return p, q
        _, inliers = cv2.findFundamentalMat(
            p, q, cv2.FM_RANSAC, RANSAC_PX / self.scale, 0.99, maxIters=500
        )
        if inliers is None or int(inliers.sum()) < MIN_MATCHES:
            return empty, empty
        ok = inliers[:, 0] > 0
        return p[ok], q[ok]

    def _features(self, i: int) -> tuple[Points, npt.NDArray[np.float32] | None]:
        if i not in self.features:
            image = self.load(i)
            small = cv2.resize(
                image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA
            )
            g = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
            keys, desc = self.sift.detectAndCompute(g, None)
            pts = np.array([k.pt for k in keys], dtype=np.float32).reshape(-1, 2) / self.scale
            self.features[i] = pts, desc
        return self.features[i]

    def region(self, pts: Points) -> BoolArray | None:
        """The subject's mask from its evidence points, or None if it is no object."""
        centre = np.median(pts, axis=0)
        dist = np.linalg.norm(pts - centre, axis=1)
        # The nearest CORE of them: stray matches (a far tree seen again) widen a hull most.
        pts = pts[dist <= float(np.quantile(dist, CORE))]
        if len(pts) < MIN_POINTS:
            return None
        w, h = self.work
        hull = cv2.convexHull(pts.astype(np.int32))
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.fillConvexPoly(mask, hull, 1)
        pad = max(1, round(HULL_PAD * max(w, h)))
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pad + 1,) * 2)
        mask = np.asarray(cv2.dilate(mask, disk), dtype=np.uint8)
        x, y, bw, bh = cv2.boundingRect(mask)
        area = int(np.count_nonzero(mask))
        if not self.min_area <= area <= self.max_area or self.is_plane(x, y, bw, bh):
            return None
        return np.asarray(mask > 0)


def add_subjects(
    builder: TrackBuilder,
    shots: list[Shot],
    changes: list[Change],
    load: Callable[[int], npt.NDArray[np.uint8]],
    size: tuple[int, int],
    work: tuple[int, int],
    blobs: BlobFinder,
) -> None:
    """Add one track per scene run with nothing moving tracked in it: what the camera kept
    in view. `size` is the frame size, `work` the size `load` gives frames at."""
    runs = scene_runs(shots, changes)
    if not runs:
        return
    # What moves on its own is what a person points at: a run with a moving thing tracked
    # in it (long enough to be kept) has no separate subject.
    moving = {
        int(ob["frame"])
        for t in builder.tracks.values()
        if len(t.observations) >= builder.min_track_frames
        for ob in t.observations
    }
    finder = SubjectFinder(
        load,
        [c.motion for c in changes],
        work,
        min_area=blobs.min_area,
        max_area=blobs.max_area,
        is_plane=blobs.is_plane,
    )
    raw_id = max(builder.tracks, default=0) + 1
    for run in runs:
        if any(run.start <= f < run.stop for f in moving):
            continue
        for i, mask in finder.regions(run).items():
            if mask.shape[::-1] != size:
                up = cv2.resize(mask.view(np.uint8), size, interpolation=cv2.INTER_NEAREST)
                mask = np.asarray(up > 0)
            builder.add_mask(raw_id, i, mask)
        raw_id += 1
