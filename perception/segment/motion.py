"""Where things move: the camera's own motion, shot cuts, and per-frame foreground masks.

The CPU segmenter reports what moves against its background, so this module answers three
questions for each sampled frame, all at work size:

- **How did the camera move?** Corners tracked by pyramidal Lucas-Kanade (checked forwards
  and backwards) and a RANSAC homography from the previous frame: a plane, a pan, a zoom.
  When too few corners survive, the frames do not show one scene: a **cut**.
- **Is this shot from a fixed camera?** A shot (the frames between cuts) whose median camera
  motion is under `still_px` is fixed, like a surveillance or tripod camera.
- **What is foreground?** In a fixed shot, a Gaussian-mixture background model (OpenCV's
  MOG2), primed on frames spread over the whole shot with what moves in them replaced by
  their median, so objects are foreground from the shot's first frame on; the pixels MOG2
  calls shadow (a darker copy of the background) are dropped, unless their local texture
  differs from the background's (a grey coat on grey asphalt). In a moving shot, the
  neighbouring frames (up to 8 either side) are warped onto the frame by the camera's
  motion; their per-pixel median is the scene behind it, and a pixel far from that median
  (by `motion_threshold` and by RESIDUAL_K of the neighbours' own spread there) moves on its
  own. A pixel fewer than two neighbours saw is not judged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

Grey = npt.NDArray[np.uint8]
Matrix = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Hist = npt.NDArray[np.float32]

MIN_CORNERS = 12  # fewer tracked corners than this: the two frames are not one scene
MIN_TRACKED = 0.15  # fraction of corners that must survive the forward-backward check
FB_MAX_PX = 1.0  # forward-backward disagreement (work px) beyond which a corner is lost
RANSAC_PX = 1.5
MIN_INLIERS = 30
CUT_HIST = 0.15  # Bhattacharyya distance of colour histograms past which frames differ
CUT_GREY = 30.0  # mean grey difference past which frames differ
CUT_JUMP = 8.0  # or past this many times the difference between their neighbours
MIN_SPREAD = 0.05  # the corners that fit the camera's motion span this share of the frame
MOG2_SHADOW = 127
SHADOW_WINDOW = 7  # px, the patch a shadow's texture is compared over
SHADOW_NCC = 0.5  # a "shadow" correlating less than this with the background is an object
TEXTURE_VAR = 16.0  # grey variance under which a background patch has no texture to compare
STILL_GREY = 1.0  # grey levels of change a still pixel shows (JPEG and sensor noise)
PRIME_FRAMES = 20  # frames of a fixed shot that teach MOG2 its background first
PRIME_MIN_GREY = 20  # a priming pixel this far from its median (or PRIME_K of its spread)
PRIME_K = 4.0  # is something passing by, and the median stands in for it
RESIDUAL_K = 4.0  # moving camera: a pixel moved if it is this many spreads from the median
# Moving camera: the frames (offsets) whose median is the scene behind a frame; spaced
# wider further out, so a thing moving slowly for its size has left its place in most.
NEIGHBOURS = (-8, -5, -3, -2, -1, 1, 2, 3, 5, 8)
UNSEEN = 1000  # stands in for a value a neighbouring frame did not see
MOVING_SIDE = 320  # moving camera: the median runs at most at this longer side


@dataclass(frozen=True)
class Shot:
    """Sampled frames [start, stop) between two cuts, and whether the camera stood still."""

    start: int
    stop: int
    fixed: bool


@dataclass(frozen=True)
class Foreground:
    """One frame's foreground at work size, and what blobs are judged by: how much each
    pixel changed (grey levels from the background), and with a background model, the
    frame and the background image (BGR)."""

    mask: BoolArray
    change: npt.NDArray[np.float32]
    still: float  # the change of a pixel where nothing happens (noise floor)
    now: npt.NDArray[np.uint8] | None = None
    before: npt.NDArray[np.uint8] | None = None


def grey(image: npt.NDArray[np.uint8]) -> Grey:
    """A BGR image as 8-bit grey."""
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


def motion_px(h: Matrix, width: int, height: int) -> float:
    """Mean displacement (px) the homography gives the frame's corners and centre."""
    pts = np.array(
        [[0, 0], [width, 0], [0, height], [width, height], [width / 2, height / 2]],
        dtype=np.float32,
    ).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(pts, h)
    return float(np.linalg.norm(moved - pts, axis=2).mean())


def camera_motion(prev: Grey, cur: Grey) -> Matrix | None:
    """The homography taking `prev` to `cur`, or None when it cannot be told (too few corners
    tracked both ways: a cut, a blank wall, a fade to black)."""
    corners = cv2.goodFeaturesToTrack(prev, maxCorners=400, qualityLevel=0.01, minDistance=6)
    if corners is None or len(corners) < MIN_CORNERS:
        return None
    fwd, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, corners, None, winSize=(21, 21), maxLevel=3)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, fwd, None, winSize=(21, 21), maxLevel=3)
    ok = (st1[:, 0] == 1) & (st2[:, 0] == 1)
    ok &= np.linalg.norm((back - corners)[:, 0], axis=1) < FB_MAX_PX
    if ok.sum() < max(MIN_CORNERS, MIN_TRACKED * len(corners)):
        return None
    h, inliers = cv2.findHomography(corners[ok], fwd[ok], cv2.RANSAC, RANSAC_PX)
    # A homography fits any few points; only many corners moving as one are the camera.
    if h is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    # Corners bunched on one thing (a box crossing a blank wall) say how that thing moved,
    # not the camera.
    hull = cv2.convexHull(corners[ok][inliers[:, 0] > 0])
    if cv2.contourArea(hull) < MIN_SPREAD * prev.shape[0] * prev.shape[1]:
        return None
    return np.asarray(h, dtype=np.float64)


def histogram(image: npt.NDArray[np.uint8]) -> Hist:
    """A normalised hue-saturation histogram, to tell a cut from a scene with no corners."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 16], [0, 180, 0, 256])
    return np.asarray(cv2.normalize(hist, None, 1.0, 0.0, cv2.NORM_L1), dtype=np.float32)


@dataclass(frozen=True)
class Change:
    """How frame i-1 became frame i: the camera's motion (None if it cannot be told), and
    how much the colours and the picture differ."""

    motion: Matrix | None
    colours: float  # Bhattacharyya distance of hue-saturation histograms
    grey: float  # mean absolute grey difference


def find_cuts(changes: list[Change]) -> list[bool]:
    """Where a new shot starts: no camera motion links the two frames, and their colours or
    pictures differ, by an absolute margin or far more than their neighbours do. Colour
    alone would cut at a bus driving past; corners alone at a blank wall."""
    cuts = [False] * len(changes)
    for i, c in enumerate(changes):
        if i == 0 or c.motion is not None:
            continue
        near = [changes[j].grey for j in range(max(1, i - 3), min(len(changes), i + 4)) if j != i]
        usual = float(np.median(near)) if near else 0.0
        jump = c.grey > CUT_JUMP * usual + STILL_GREY * CUT_JUMP
        cuts[i] = c.colours > CUT_HIST or c.grey > CUT_GREY or jump
    return cuts


def change(prev: Grey, cur: Grey, prev_hist: Hist, hist: Hist) -> Change:
    """The `Change` from one frame to the next."""
    return Change(
        camera_motion(prev, cur),
        float(cv2.compareHist(prev_hist, hist, cv2.HISTCMP_BHATTACHARYYA)),
        float(cv2.absdiff(prev, cur).mean()),
    )


def plan_shots(
    motions: list[Matrix | None], cuts: list[bool], still_px: float, size: tuple[int, int]
) -> list[Shot]:
    """Split frames into shots at cuts; `motions[i]`, `cuts[i]` are about frame i-1 → i."""
    width, height = size
    shots: list[Shot] = []
    start = 0
    n = len(motions)
    for i in range(1, n + 1):
        if i < n and not cuts[i]:
            continue
        moves = [motion_px(m, width, height) for m in motions[start + 1 : i] if m is not None]
        # A one-frame shot has no motion to judge; treat it as fixed (it yields nothing
        # either way: a background model needs a second frame to differ from).
        fixed = not moves or float(np.median(moves)) < still_px
        shots.append(Shot(start, i, fixed))
        start = i
    return shots


class FixedForeground:
    """MOG2 foreground for one fixed shot; shadows are not foreground."""

    def __init__(self, history: int, var_threshold: float) -> None:
        self.sub = cv2.createBackgroundSubtractorMOG2(
            history=history, varThreshold=var_threshold, detectShadows=True
        )
        self.rate = 1.0 / history

    def prime(self, frames: list[npt.NDArray[np.uint8]]) -> None:
        """Learn the background from frames spread over the shot, without what moves in them.

        MOG2 learns fast at first (rate 1/n), so an object that crosses the priming frames
        would leave a colour mode behind that counts as background later. So each priming
        frame is cleaned first: where it departs from the frames' per-pixel median by more
        than that pixel's own spread (a passer-by, not swaying leaves), the median stands
        in. The model then has the background alone, and an object present from the
        shot's first frame differs from it from that frame on.
        """
        stack = np.stack(frames).astype(np.int16)
        median = np.median(stack, axis=0)
        spread = np.median(np.abs(stack - median), axis=0)
        limit = np.maximum(PRIME_MIN_GREY, PRIME_K * spread).max(axis=2, keepdims=True)
        clean = np.where(np.abs(stack - median).max(axis=3, keepdims=True) > limit, median, stack)
        for image in clean.astype(np.uint8):
            self.sub.apply(image)

    def apply(self, image: npt.NDArray[np.uint8]) -> Foreground:
        """The foreground of the next frame of the shot (and learn from it)."""
        # A fixed rate from here on: MOG2's own (1/frames seen, fast at first) would make
        # a thing that stands still early in a shot background within a second.
        fg = self.sub.apply(image, learningRate=self.rate)
        cur = grey(image)
        bg_image = np.asarray(self.sub.getBackgroundImage(), dtype=np.uint8)
        bg = grey(bg_image)
        mask = np.asarray(fg > MOG2_SHADOW)
        shadow = np.asarray(fg == MOG2_SHADOW)
        if shadow.any():
            # MOG2 calls anything darker with the same hue a shadow: also a grey coat on
            # grey asphalt, or a hand against a white sky. A cast shadow keeps the texture
            # of what it falls on; where the texture differs, it is an object.
            mask |= shadow & texture_differs(cur, bg)
        change = cv2.absdiff(cur, bg).astype(np.float32)
        return Foreground(mask, change, STILL_GREY, image, bg_image)


def texture_differs(cur: Grey, bg: Grey) -> BoolArray:
    """Pixels where `cur` and `bg` do not share their local texture (normalised correlation
    of SHADOW_WINDOW patches under SHADOW_NCC, where the background has texture at all)."""
    a, b = cur.astype(np.float32), bg.astype(np.float32)
    k = (SHADOW_WINDOW, SHADOW_WINDOW)
    ma, mb = cv2.blur(a, k), cv2.blur(b, k)
    va = cv2.blur(a * a, k) - ma * ma
    vb = cv2.blur(b * b, k) - mb * mb
    cov = cv2.blur(a * b, k) - ma * mb
    ncc = cov / np.sqrt(np.maximum(va * vb, 1e-6))
    textured = vb > TEXTURE_VAR
    return np.asarray(textured & (ncc < SHADOW_NCC))


def moving_foreground(
    cur: npt.NDArray[np.uint8],
    aligned: list[tuple[npt.NDArray[np.uint8], BoolArray]],
    min_grey: float,
    k: float,
) -> Foreground:
    """Pixels of `cur` that differ from the scene behind them, for a moving camera.

    `aligned` are the shot's neighbouring frames warped onto `cur` by the camera's motion,
    each with where it saw `cur`'s pixels at all. The still scene lines up across them and
    a thing that moves on its own does not, so their per-pixel median is the background
    behind it, and their median spread is how much that pixel varies anyway (a misaligned
    edge, parallax). A pixel is foreground when it is further from the median than both
    `min_grey` and `k` times that spread, and at least two neighbours saw it.
    """
    stack = np.stack([a for a, _ in aligned]).astype(np.int16)
    unseen = ~np.stack([s for _, s in aligned])
    # A median over what was seen only: unseen values are set alternately far above and
    # far below, which leaves the median of the rest where it was.
    high = unseen & (np.cumsum(unseen, axis=0, dtype=np.int8) % 2 == 1)
    stack[high] = UNSEEN
    stack[unseen & ~high] = -UNSEEN
    mid = len(aligned) // 2
    median = np.partition(stack, mid, axis=0)[mid]
    # Colour, not grey: a red ball on a grey floor can be just as bright as the floor.
    dev = np.abs(stack - median).max(axis=3)
    dev[unseen] = 0
    dev[high] = UNSEEN
    spread = np.partition(dev, mid, axis=0)[mid]
    diff = np.abs(cur.astype(np.int16) - median).max(axis=2).astype(np.float32)
    seen_by = len(aligned) - unseen.sum(axis=0)
    mask = (diff > np.maximum(min_grey, k * spread)) & (seen_by >= 2)
    diff[seen_by < 2] = 0.0
    return Foreground(np.asarray(mask), diff.astype(np.float32), STILL_GREY)


def to_frame(h: Matrix, fx: float, fy: float) -> Matrix:
    """A work-size homography expressed in frame pixels (frame = work scaled by fx, fy)."""
    s = np.diag([fx, fy, 1.0])
    return np.asarray(s @ h @ np.linalg.inv(s), dtype=np.float64)


def move_point(h: Matrix, x: float, y: float) -> tuple[float, float]:
    """Where homography `h` takes the point (x, y)."""
    v = h @ np.array([x, y, 1.0])
    if abs(v[2]) < 1e-9:
        return x, y
    return float(v[0] / v[2]), float(v[1] / v[2])


class ShotForeground:
    """The foreground of each frame of one shot, frame after frame, in order."""

    def __init__(
        self,
        shot: Shot,
        load: Callable[[int], npt.NDArray[np.uint8]],
        motions: list[Matrix | None],
        *,
        history: int,
        var_threshold: float,
        motion_grey: float,
    ) -> None:
        self.shot, self.load, self.motions = shot, load, motions
        self.motion_grey = motion_grey
        self.greys: dict[int, npt.NDArray[np.uint8]] = {}
        self.scale = 1.0
        if not shot.fixed:
            self.scale = min(1.0, MOVING_SIDE / max(load(shot.start).shape[:2]))
        self.fixed: FixedForeground | None = None
        if shot.fixed:
            self.fixed = FixedForeground(history, var_threshold)
            # Spread over the whole shot: its median is the background even where someone
            # stood still for a while at the start.
            picks = np.linspace(
                shot.start, shot.stop - 1, min(PRIME_FRAMES, shot.stop - shot.start)
            )
            self.fixed.prime([load(i) for i in sorted({round(float(p)) for p in picks})])

    def _small(self, i: int) -> npt.NDArray[np.uint8]:
        if i not in self.greys:
            g = self.load(i)
            if self.scale < 1.0:
                g = np.asarray(
                    cv2.resize(g, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
                )
            # A light blur: JPEG blocks and sensor noise are not motion.
            self.greys[i] = np.asarray(cv2.GaussianBlur(g, (5, 5), 0), dtype=np.uint8)
        return self.greys[i]

    def _to(self, j: int, i: int) -> Matrix:
        """The homography taking frame j's pixels to frame i's (both in the same shot)."""
        h = np.eye(3)
        # motions[n] takes frame n-1 to frame n.
        for n in range(j + 1, i + 1):
            h = self._motion(n) @ h
        for n in range(i + 1, j + 1):
            h = np.linalg.inv(self._motion(n)) @ h
        return np.asarray(h, dtype=np.float64)

    def _motion(self, n: int) -> Matrix:
        m = self.motions[n]
        if m is None:  # not measurable (no corners): still is the best guess
            return np.eye(3)
        s = np.diag([self.scale, self.scale, 1.0])
        return np.asarray(s @ m @ np.linalg.inv(s), dtype=np.float64)

    def __call__(self, i: int, image: npt.NDArray[np.uint8]) -> Foreground | None:
        """Frame `i`'s foreground (`image` is frame i at work size); None if unknowable."""
        if self.fixed is not None:
            return self.fixed.apply(image)
        near = [i + d for d in NEIGHBOURS if self.shot.start <= i + d < self.shot.stop]
        for old in [j for j in self.greys if j < i - max(NEIGHBOURS)]:
            del self.greys[old]
        if len(near) < 2:
            return None  # two frames cannot tell which of them holds the moving thing
        cur = self._small(i)
        h, w = cur.shape[:2]
        aligned = []
        for j in near:
            warped = cv2.warpPerspective(self._small(j), self._to(j, i), (w, h))
            full = np.full((h, w), 255, dtype=np.uint8)
            seen = cv2.warpPerspective(full, self._to(j, i), (w, h)) == 255
            aligned.append((np.asarray(warped, dtype=np.uint8), np.asarray(seen)))
        fg = moving_foreground(cur, aligned, self.motion_grey, RESIDUAL_K)
        if fg.mask.shape == image.shape[:2]:
            return fg
        size = (image.shape[1], image.shape[0])
        up = cv2.resize(fg.mask.view(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        change = cv2.resize(fg.change, size, interpolation=cv2.INTER_LINEAR)
        return Foreground(np.asarray(up > 0), np.asarray(change, dtype=np.float32), fg.still)
