"""Score tracks against a hand-labelled reference: precision, recall and ID switches.

The reference (tests/perception/data/vtest_people.json, described in the README beside it)
holds people's boxes in a few source frames of a video, keyed by presentation time. A job's
`frames.json` says when each sampled frame was taken and its `tracks.json` where each track
was in each sampled frame, so:

- each labelled frame is matched to the sampled frame nearest in time, if one lies within
  half a sampling interval (each sampled frame scores at most one labelled frame); the rest
  are counted in `Score.unscored`;
- predicted boxes are scaled from the sampled frame size to the reference's source size;
- per scored frame, predictions are assigned to labelled people by the Hungarian method on
  IoU, a match needing IoU >= `iou` (0.5). A match is a true positive; a labelled person
  left unmatched a false negative; a prediction left unmatched a false positive, unless it
  matches a person marked `ignore` or lies mostly (by its own area) inside one's box;
- ID switches are counted as in CLEAR-MOT: within a run of labelled frames, each time a
  person is matched to a different track than at their previous match.

`python -m tests.perception.reference tracks.json frames.json` prints the score as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

Json = dict[str, Any]
Box = tuple[float, float, float, float]  # x, y, w, h
REFERENCE = Path(__file__).resolve().parent / "data" / "vtest_people.json"
MATCH_IOU = 0.5
# A prediction this much of whose area lies in an ignored box is about that person: a piece
# of someone half hidden, or a box around a group that is labelled as one ignored box.
IGNORE_COVER = 0.5


@dataclass(frozen=True)
class Person:
    """One labelled person in one frame."""

    id: int
    box: Box
    ignore: bool = False


@dataclass(frozen=True)
class LabelledFrame:
    """A labelled source frame: its index, presentation time, run, and the people in it."""

    index: int
    t: float
    run: int
    people: tuple[Person, ...]


@dataclass(frozen=True)
class Reference:
    """A labelled reference for one video, in its source pixel size."""

    video: str
    width: int
    height: int
    fps: float
    frames: tuple[LabelledFrame, ...]

    @property
    def labelled(self) -> int:
        """Non-ignored people over all labelled frames."""
        return sum(not p.ignore for f in self.frames for p in f.people)


@dataclass
class FrameScore:
    """What happened in one labelled frame; `sampled` is None when it was not scored."""

    index: int
    t: float
    sampled: int | None
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    ignored: int = 0  # predictions on ignored people: neither TP nor FP
    id_switches: int = 0
    matches: dict[int, int] = field(default_factory=dict)  # person id -> track id


@dataclass
class Score:
    """Totals over the scored frames, and each labelled frame's detail."""

    precision: float
    recall: float
    id_switches: int
    true_positives: int
    false_positives: int
    false_negatives: int
    labelled: int  # non-ignored people in the scored frames: TP + FN
    scored: int
    unscored: int
    iou: float
    frames: list[FrameScore]

    def to_json(self) -> Json:
        """A JSON-ready dict."""
        return asdict(self)


def load_reference(path: Path = REFERENCE) -> Reference:
    """Read a reference file (format in tests/perception/data/README.md)."""
    doc = json.loads(Path(path).read_text())
    frames = tuple(
        LabelledFrame(
            index=int(f["index"]),
            t=float(f["t"]),
            run=int(f.get("run", 1)),
            people=tuple(
                Person(int(p["id"]), _box(p["box"]), bool(p.get("ignore", False)))
                for p in f["people"]
            ),
        )
        for f in doc["frames"]
    )
    return Reference(
        video=str(doc.get("video", "")),
        width=int(doc["width"]),
        height=int(doc["height"]),
        fps=float(doc.get("fps", 0.0)),
        frames=tuple(sorted(frames, key=lambda f: f.t)),
    )


def _box(values: Sequence[float]) -> Box:
    x, y, w, h = (float(v) for v in values)
    return x, y, w, h


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> npt.NDArray[np.float64]:
    """IoU of every box in `a` against every box in `b`."""
    return _overlaps(a, b, of_first=False)


def _overlaps(a: Sequence[Box], b: Sequence[Box], *, of_first: bool) -> npt.NDArray[np.float64]:
    """IoU, or with `of_first` the share of each `a` box's own area that lies in `b`."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    aa, bb = np.asarray(a, dtype=float)[:, None, :], np.asarray(b, dtype=float)[None, :, :]
    iw = np.minimum(aa[..., 0] + aa[..., 2], bb[..., 0] + bb[..., 2]) - np.maximum(
        aa[..., 0], bb[..., 0]
    )
    ih = np.minimum(aa[..., 1] + aa[..., 3], bb[..., 1] + bb[..., 3]) - np.maximum(
        aa[..., 1], bb[..., 1]
    )
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = aa[..., 2] * aa[..., 3]
    denom = area_a if of_first else area_a + bb[..., 2] * bb[..., 3] - inter
    out: npt.NDArray[np.float64] = np.where(denom > 0, inter / np.maximum(denom, 1e-12), 0.0)
    return out


def _assign(iou: npt.NDArray[np.float64], threshold: float) -> list[tuple[int, int]]:
    """The Hungarian assignment maximising total IoU, keeping pairs at or above threshold."""
    if iou.size == 0:
        return []
    # Pairs under the threshold may not take part, or they could push a good pair apart.
    usable = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(usable, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if usable[r, c] > 0]


def _sample_times(frames_doc: Json) -> tuple[list[float], float]:
    """Each sampled frame's time, and the sampling interval."""
    times = [float(f["t"]) for f in frames_doc["frames"]]
    steps = np.diff(times)
    if len(steps) and float(np.median(steps)) > 0:
        return times, float(np.median(steps))
    fps = float(frames_doc.get("fps") or 0.0)
    return times, (1.0 / fps if fps > 0 else 0.0)


def match_frames(reference: Reference, frames_doc: Json) -> dict[int, int]:
    """Labelled frame index -> the sampled frame index it is scored against."""
    times, interval = _sample_times(frames_doc)
    if not times:
        return {}
    indices = [int(f.get("index", i)) for i, f in enumerate(frames_doc["frames"])]
    ts = np.asarray(times)
    best: dict[int, tuple[float, int]] = {}  # sampled index -> (distance, labelled index)
    for lf in reference.frames:
        k = int(np.argmin(np.abs(ts - lf.t)))
        gap = abs(times[k] - lf.t)
        if gap > interval / 2 + 1e-6:
            continue
        if indices[k] not in best or gap < best[indices[k]][0]:
            best[indices[k]] = (gap, lf.index)
    return {labelled: sampled for sampled, (_, labelled) in best.items()}


def predictions(
    reference: Reference, tracks_doc: Json, frames_doc: Json
) -> dict[int, list[tuple[int, Box]]]:
    """Sampled frame index -> [(track id, box in reference pixels)]."""
    width = float(tracks_doc.get("width") or frames_doc.get("width") or reference.width)
    height = float(tracks_doc.get("height") or frames_doc.get("height") or reference.height)
    sx, sy = reference.width / width, reference.height / height
    out: dict[int, list[tuple[int, Box]]] = {}
    for track in tracks_doc["tracks"]:
        for ob in track["frames"]:
            x, y, w, h = _box(ob["bbox"])
            out.setdefault(int(ob["frame"]), []).append(
                (int(track["id"]), (x * sx, y * sy, w * sx, h * sy))
            )
    return out


def score_frame(
    lf: LabelledFrame, preds: Sequence[tuple[int, Box]], sampled: int, iou: float
) -> FrameScore:
    """Match one frame's predictions to its labelled people."""
    out = FrameScore(lf.index, lf.t, sampled)
    people = [p for p in lf.people if not p.ignore]
    ignored = [p for p in lf.people if p.ignore]
    boxes = [b for _, b in preds]
    # Labelled people first, so a prediction on someone beside an ignored box counts as found.
    pairs = _assign(iou_matrix(boxes, [p.box for p in people]), iou)
    for r, c in pairs:
        out.matches[people[c].id] = preds[r][0]
    out.true_positives = len(pairs)
    out.false_negatives = len(people) - len(pairs)
    rest = sorted(set(range(len(boxes))) - {r for r, _ in pairs})
    rest_boxes = [boxes[r] for r in rest]
    ign_boxes = [p.box for p in ignored]
    on_ignored = {rest[r] for r, _ in _assign(iou_matrix(rest_boxes, ign_boxes), iou)}
    cover = _overlaps(rest_boxes, ign_boxes, of_first=True)
    if cover.size:
        on_ignored |= {rest[r] for r in np.flatnonzero(cover.max(axis=1) > IGNORE_COVER)}
    out.ignored = len(on_ignored)
    out.false_positives = len(rest) - len(on_ignored)
    return out


def score(
    reference: Reference, tracks_doc: Json, frames_doc: Json, *, iou: float = MATCH_IOU
) -> Score:
    """Precision, recall and ID switches of `tracks_doc` against `reference`."""
    matched = match_frames(reference, frames_doc)
    preds = predictions(reference, tracks_doc, frames_doc)
    frames: list[FrameScore] = []
    last_track: dict[tuple[int, int], int] = {}  # (run, person id) -> track at last match
    for lf in reference.frames:  # in time order
        if lf.index not in matched:
            frames.append(FrameScore(lf.index, lf.t, None))
            continue
        fs = score_frame(lf, preds.get(matched[lf.index], []), matched[lf.index], iou)
        for person, track in fs.matches.items():
            before = last_track.get((lf.run, person))
            if before is not None and before != track:
                fs.id_switches += 1
            last_track[(lf.run, person)] = track
        frames.append(fs)
    scored = [f for f in frames if f.sampled is not None]
    tp = sum(f.true_positives for f in scored)
    fp = sum(f.false_positives for f in scored)
    fn = sum(f.false_negatives for f in scored)
    return Score(
        # Nothing predicted or nothing to find scores 0: an empty result never passes.
        precision=round(tp / (tp + fp), 4) if tp + fp else 0.0,
        recall=round(tp / (tp + fn), 4) if tp + fn else 0.0,
        id_switches=sum(f.id_switches for f in scored),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        labelled=tp + fn,
        scored=len(scored),
        unscored=len(frames) - len(scored),
        iou=iou,
        frames=frames,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: score a job's tracks.json and frames.json against the reference, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m tests.perception.reference")
    parser.add_argument("tracks", type=Path, help="tracks.json of the segment stage")
    parser.add_argument("frames", type=Path, help="frames.json, or the frames dir holding it")
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--iou", type=float, default=MATCH_IOU)
    parser.add_argument("--summary", action="store_true", help="leave out the per-frame detail")
    args = parser.parse_args(argv)
    frames_path = args.frames / "frames.json" if args.frames.is_dir() else args.frames
    result = score(
        load_reference(args.reference),
        json.loads(args.tracks.read_text()),
        json.loads(frames_path.read_text()),
        iou=args.iou,
    ).to_json()
    if args.summary:
        result.pop("frames")
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
