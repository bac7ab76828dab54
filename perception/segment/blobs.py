"""From a foreground mask to object detections: fragments joined, planes and specks dropped.

A foreground mask (work size, from `perception.segment.motion`) is cleaned up (an opening
removes specks; a closing with an upright ellipse joins the pieces of one body that a
background-coloured belt or bag cut apart, without joining neighbours side by side), cut
into connected components, and each component becomes a `Detection` in frame pixels,
unless it is:

- smaller than `min_area_frac` of the frame (noise, a leaf, a far-away flicker), or larger
  than `max_area_frac` (the whole view changed: a light switched on, a camera shake);
- a **plane**: it runs from one side of the frame to the opposite side (floor, sky, a wall
  sliding past a moving camera), or touches three sides. A person walking into view
  touches one side and is kept.

`split_detection` divides one blob among the tracks predicted inside it (two people who
walk side by side merge into one blob; their tracks say where each one is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from perception.segment.motion import Foreground

BoolArray = npt.NDArray[np.bool_]
Box = tuple[float, float, float, float]  # x, y, w, h in frame pixels
DENSITY = 0.6  # least share of a joined blob that was foreground before the joining
THIN_FRAC = 0.008  # blobs thinner than this share of the frame's longer side are dropped
GHOST_RATIO = 1.5  # a ghost stands out this much more in the background than in the frame
VALLEY = 0.4  # a blob is two side by side where its column height dips under this share
MIN_SIDE = 0.2  # of the lower peak either side, and each side holds this share of its area


@dataclass
class Detection:
    """One object in one frame, in frame pixels."""

    x: int
    y: int
    crop: BoolArray  # mask over the bbox (x, y, w, h)
    area: int
    cx: float
    cy: float
    colour: npt.NDArray[np.float32]  # mean Lab

    @property
    def box(self) -> Box:
        """The bbox as floats (x, y, w, h)."""
        h, w = self.crop.shape
        return float(self.x), float(self.y), float(w), float(h)


def make_detection(
    crop: BoolArray, x: int, y: int, lab: npt.NDArray[np.float32]
) -> Detection | None:
    """A detection from a frame-pixel crop at (x, y); `lab` is the frame in Lab. None if empty."""
    bx, by, bw, bh = cv2.boundingRect(crop.view(np.uint8))
    if bw == 0 or bh == 0:
        return None
    tight = np.ascontiguousarray(crop[by : by + bh, bx : bx + bw])
    ys, xs = np.nonzero(tight)
    x0, y0 = x + bx, y + by
    patch = lab[y0 : y0 + bh, x0 : x0 + bw]
    colour = np.asarray(patch[tight].mean(axis=0), dtype=np.float32)
    return Detection(
        x=x0,
        y=y0,
        crop=tight,
        area=int(xs.size),
        cx=x0 + float(xs.mean()),
        cy=y0 + float(ys.mean()),
        colour=colour,
    )


class BlobFinder:
    """Turns work-size foreground masks into frame-pixel detections."""

    def __init__(
        self,
        work: tuple[int, int],
        frame: tuple[int, int],
        *,
        min_area_frac: float,
        max_area_frac: float,
        join_px: int,
        min_contrast: float,
    ) -> None:
        self.min_contrast = min_contrast
        self.sw, self.sh = work
        self.width, self.height = frame
        self.fx, self.fy = self.width / self.sw, self.height / self.sh
        self.min_area = max(1.0, min_area_frac * self.sw * self.sh)
        self.min_thickness = max(2.0, THIN_FRAC * max(self.sw, self.sh))
        self.max_area = max_area_frac * self.sw * self.sh
        self.open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        # Taller than wide: the parts of one upright body lie above each other.
        j = max(1, join_px)
        self.close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (j | 1, (2 * j) | 1))

    def find(self, fg: Foreground, lab: npt.NDArray[np.float32]) -> list[Detection]:
        """The detections of one frame: `fg` at work size, `lab` the frame (frame px) in Lab."""
        solid = cv2.morphologyEx(fg.mask.view(np.uint8), cv2.MORPH_OPEN, self.open)
        closed = cv2.morphologyEx(solid, cv2.MORPH_CLOSE, self.close)
        mask = fill_holes(np.asarray(closed, dtype=np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        out: list[Detection] = []
        for k in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[k])
            if area < self.min_area or area > self.max_area or self.is_plane(x, y, w, h):
                continue
            comp = np.asarray(labels[y : y + h, x : x + w] == k)
            # Flicker (leaves, water, noise) closes into loose lace; a body is mostly solid.
            if np.count_nonzero(solid[y : y + h, x : x + w][comp]) < DENSITY * area:
                continue
            if self.is_thin(comp) or self.contrast(fg, mask, comp, x, y) < self.min_contrast:
                continue
            if is_ghost(fg, comp, x, y):
                continue
            for x0, x1 in side_by_side(comp):
                part = comp[:, x0:x1]
                det = self._to_frame(part, x + x0, y, lab) if part.any() else None
                if det is not None:
                    out.append(det)
        return out

    def contrast(
        self,
        fg: Foreground,
        mask: npt.NDArray[np.uint8],
        comp: BoolArray,
        x: int,
        y: int,
    ) -> float:
        """How much more the blob changed than the background right around it.

        Swaying leaves or rippling water change everywhere at once, so a blob of them
        barely stands out from its surroundings; a person against a still background does.
        """
        h, w = comp.shape
        r = max(3, round(0.3 * math.sqrt(float(comp.sum()))))
        x0, y0 = max(0, x - r), max(0, y - r)
        x1, y1 = min(self.sw, x + w + r), min(self.sh, y + h + r)
        outside = np.ones((y1 - y0, x1 - x0), dtype=np.uint8)
        outside[y - y0 : y - y0 + h, x - x0 : x - x0 + w][comp] = 0
        inner = outside == 0
        near = cv2.distanceTransform(outside, cv2.DIST_L2, 3) <= r
        ring = near & ~inner & (mask[y0:y1, x0:x1] == 0)
        patch = fg.change[y0:y1, x0:x1]
        around = float(patch[ring].mean()) if ring.any() else 0.0
        # The noise floor keeps a blob on a perfectly still background from dividing by 0.
        return float(patch[inner].mean()) / (around + fg.still)

    def is_thin(self, comp: BoolArray) -> bool:
        """A blob nowhere thicker than `min_thickness` (a fluttering tape, a wire, the edge a
        camera shake leaves) is no object."""
        padded = np.pad(comp.view(np.uint8), 1)
        inside = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
        return 2.0 * float(inside.max()) < self.min_thickness

    def is_plane(self, x: int, y: int, w: int, h: int) -> bool:
        """A blob spanning the frame side to side, or touching three sides, is background."""
        left, top = x <= 0, y <= 0
        right, bottom = x + w >= self.sw, y + h >= self.sh
        if (left and right) or (top and bottom):
            return True
        return sum((left, top, right, bottom)) >= 3

    def _to_frame(
        self, crop: BoolArray, x: int, y: int, lab: npt.NDArray[np.float32]
    ) -> Detection | None:
        if (self.sw, self.sh) == (self.width, self.height):
            return make_detection(crop, x, y, lab)
        fx0, fy0 = math.floor(x * self.fx), math.floor(y * self.fy)
        fx1 = min(self.width, math.ceil((x + crop.shape[1]) * self.fx))
        fy1 = min(self.height, math.ceil((y + crop.shape[0]) * self.fy))
        up = cv2.resize(
            crop.view(np.uint8) * 255, (fx1 - fx0, fy1 - fy0), interpolation=cv2.INTER_LINEAR
        )
        return make_detection(np.asarray(up > 127), fx0, fy0, lab)


def is_ghost(fg: Foreground, comp: BoolArray, x: int, y: int) -> bool:
    """A blob where something *was* (a parked car that left, a person who stood still while
    the background was learnt): in the frame it looks like the floor right around it, and
    only the background model holds something else there. A real object is the other way
    round: it differs from its surroundings now, and the background behind it did not."""
    if fg.now is None or fg.before is None:
        return False
    h, w = comp.shape
    r = max(3, round(0.2 * math.sqrt(float(comp.sum()))))
    x0, y0 = max(0, x - r), max(0, y - r)
    x1, y1 = min(fg.now.shape[1], x + w + r), min(fg.now.shape[0], y + h + r)
    inner = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    inner[y - y0 : y - y0 + h, x - x0 : x - x0 + w][comp] = 1
    ring = cv2.dilate(inner, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    ring_mask, in_mask = (ring > 0) & (inner == 0), inner > 0
    if not ring_mask.any():
        return False

    def stand_out(image: npt.NDArray[np.uint8]) -> float:
        patch = image[y0:y1, x0:x1].astype(np.float32)
        return float(np.linalg.norm(patch[in_mask].mean(axis=0) - patch[ring_mask].mean(axis=0)))

    return stand_out(fg.before) > GHOST_RATIO * stand_out(fg.now)


def fill_holes(mask: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The mask with every region it encloses filled: a coat the colour of the road behind
    it, and the eyebrows and mouth of a moving face, are part of the thing around them."""
    padded = np.pad(mask, 1)
    outside = padded.copy()
    flood = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), dtype=np.uint8)
    cv2.floodFill(outside, flood, (0, 0), 1)
    # `outside` is 1 wherever the mask is or the border reaches: what is left is enclosed.
    return np.asarray(mask | (outside[1:-1, 1:-1] == 0), dtype=np.uint8)


def side_by_side(comp: BoolArray, depth: int = 2) -> list[tuple[int, int]]:
    """Column ranges of the things standing side by side in one blob (two people walking
    together touch at a hand or a shoulder): cut where the blob's column height dips under
    VALLEY of the lower of the peaks either side, each side holding MIN_SIDE of its area."""
    w = comp.shape[1]
    if depth == 0 or w < 6:
        return [(0, w)]
    counts = comp.sum(axis=0).astype(np.float32)
    k = max(1, w // 10)
    profile = np.convolve(counts, np.ones(k, dtype=np.float32) / k, mode="same")
    total = float(counts.sum())
    cum = np.cumsum(counts)
    left_peak = np.maximum.accumulate(profile)
    right_peak = np.maximum.accumulate(profile[::-1])[::-1]
    best, cut = VALLEY, -1
    for v in range(2, w - 2):
        if cum[v - 1] < MIN_SIDE * total or total - cum[v - 1] < MIN_SIDE * total:
            continue
        ratio = profile[v] / max(1e-6, min(left_peak[v - 1], right_peak[v + 1]))
        if ratio < best:
            best, cut = ratio, v
    if cut < 0:
        return [(0, w)]
    left = side_by_side(comp[:, :cut], depth - 1)
    right = side_by_side(comp[:, cut:], depth - 1)
    return left + [(a + cut, b + cut) for a, b in right]


def box_overlap(a: Box, b: Box) -> float:
    """Area of the intersection of two boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def split_detection(
    det: Detection, boxes: list[Box], lab: npt.NDArray[np.float32]
) -> list[Detection | None]:
    """Divide a blob among the predicted boxes inside it: each pixel goes to the box whose
    centre is nearest in units of that box's size. One part per box (None if it got none)."""
    h, w = det.crop.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs += det.x
    ys += det.y
    dist = np.stack(
        [
            ((xs - (bx + bw / 2)) / max(bw, 1.0)) ** 2 + ((ys - (by + bh / 2)) / max(bh, 1.0)) ** 2
            for bx, by, bw, bh in boxes
        ]
    )
    owner = np.argmin(dist, axis=0)
    parts: list[Detection | None] = []
    for k in range(len(boxes)):
        part = det.crop & (owner == k)
        parts.append(make_detection(part, det.x, det.y, lab) if part.any() else None)
    return parts
