"""The vtest.avi labelled reference is sane, and the scorer counts what it says it counts.

The file: 20 labelled frames in two runs of consecutive 5 fps samples, boxes inside the
frame, one box per person per frame, identities that continue from frame to frame, and a
busy enough scene to measure recall on. The scorer: the reference's own boxes as tracks are
perfect; boxes pushed off the people find no one; swapped identities are ID switches; boxes
on people marked ignore cost nothing; a smaller sampled size is scaled back; a labelled
frame with no sampled frame near it is left out, and said so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from perception.config import PerceptionConfig
from perception.video import Pass, probe, sample
from tests.perception.reference import (
    REFERENCE,
    LabelledFrame,
    Person,
    Reference,
    load_reference,
    main,
    score,
)
from tests.realdata import opencv_clip

Json = dict[str, Any]
FPS = PerceptionConfig().fps


@pytest.fixture(scope="module")
def ref() -> Reference:
    """The committed vtest.avi reference."""
    return load_reference(REFERENCE)


def sampled_frames(
    ref: Reference, *, fps: float = FPS, size: tuple[int, int] = (768, 576), drop: float = -1.0
) -> Json:
    """A frames.json as the frames stage writes it for the whole video, less the sample
    taken at time `drop`."""
    count = int(ref.frames[-1].t * fps) + 10
    records = [
        {"index": i, "file": f"{i:06d}.jpg", "source_frame": round(i / fps * ref.fps), "t": t}
        for i in range(count)
        if abs((t := round(i / fps, 4)) - drop) > 1e-6
    ]
    return {"fps": fps, "width": size[0], "height": size[1], "truncated": False, "frames": records}


def tracks_from(
    ref: Reference,
    *,
    keep: Callable[[Person], bool] = lambda p: True,
    track_of: Callable[[LabelledFrame, Person], int] = lambda f, p: p.id,
    shift: float = 0.0,
    scale: float = 1.0,
) -> Json:
    """A tracks.json whose tracks are the labelled people themselves: box moved right by
    `shift` of its width, pixels scaled by `scale`, the track id chosen by `track_of`."""
    tracks: dict[int, list[Json]] = {}
    for lf in ref.frames:
        for p in filter(keep, lf.people):
            x, y, w, h = p.box
            box = [round((x + shift * w) * scale, 2), round(y * scale, 2), w * scale, h * scale]
            tracks.setdefault(track_of(lf, p), []).append(
                {"frame": round(lf.t * FPS), "bbox": box, "area": int(w * h * scale**2)}
            )
    return {
        "width": round(ref.width * scale),
        "height": round(ref.height * scale),
        "frame_count": round(ref.frames[-1].t * FPS) + 10,
        "tracks": [{"id": k, "frames": v} for k, v in sorted(tracks.items())],
    }


def runs(ref: Reference) -> dict[int, list[LabelledFrame]]:
    """The labelled frames of each run, in time order."""
    out: dict[int, list[LabelledFrame]] = {}
    for lf in ref.frames:
        out.setdefault(lf.run, []).append(lf)
    return out


# --- the file ---------------------------------------------------------------------------


def test_twenty_frames_in_two_runs_of_consecutive_samples(ref: Reference) -> None:
    """20 frames, two runs of 10 frames one 5 fps sample apart, keyed by time and index."""
    assert (ref.video, ref.width, ref.height, ref.fps) == ("vtest.avi", 768, 576, 10.0)
    assert len(ref.frames) == 20
    by_run = runs(ref)
    assert sorted(len(frames) for frames in by_run.values()) == [10, 10]
    for frames in by_run.values():
        for a, b in pairwise(frames):
            assert b.index - a.index == round(ref.fps / FPS)
            assert b.t - a.t == pytest.approx(1 / FPS)
    for lf in ref.frames:
        assert lf.t == pytest.approx(lf.index / ref.fps)


def test_boxes_lie_inside_the_frame(ref: Reference) -> None:
    """Every box has a positive size and lies within 768x576."""
    for lf in ref.frames:
        for p in lf.people:
            x, y, w, h = p.box
            assert w > 0 and h > 0, (lf.index, p)
            assert x >= 0 and y >= 0 and x + w <= ref.width and y + h <= ref.height, (lf.index, p)


def test_one_box_per_person_per_frame(ref: Reference) -> None:
    """No person id appears twice in one frame."""
    for lf in ref.frames:
        ids = [p.id for p in lf.people]
        assert len(ids) == len(set(ids)), lf.index


def test_identities_continue_through_a_run(ref: Reference) -> None:
    """A person id belongs to one run, appears in consecutive frames of it with no gap, and
    its box moves by less than half its height between frames (0.2 s of walking)."""
    seen_in: dict[int, int] = {}
    for run, frames in runs(ref).items():
        positions: dict[int, list[int]] = {}
        for k, lf in enumerate(frames):
            for p in lf.people:
                assert seen_in.setdefault(p.id, run) == run, (p.id, "in two runs")
                positions.setdefault(p.id, []).append(k)
        for pid, ks in positions.items():
            assert ks == list(range(ks[0], ks[-1] + 1)), (pid, "gap", ks)
        for a, b in pairwise(frames):
            before = {p.id: p.box for p in a.people if not p.ignore}
            for p in b.people:
                if p.ignore or p.id not in before:
                    continue
                (x0, y0, w0, h0), (x1, y1, w1, h1) = before[p.id], p.box
                jump = ((x1 + w1 / 2 - x0 - w0 / 2) ** 2 + (y1 + h1 / 2 - y0 - h0 / 2) ** 2) ** 0.5
                assert jump < h0 / 2, (b.index, p.id, before[p.id], p.box)


def test_busy_enough_to_measure_recall(ref: Reference) -> None:
    """At least 3 labelled (not ignored) people per frame on average, someone in every frame."""
    counts = [sum(not p.ignore for p in lf.people) for lf in ref.frames]
    assert min(counts) >= 1
    assert sum(counts) / len(counts) >= 3.0, counts
    assert ref.labelled == sum(counts)


def test_labelled_frames_are_what_the_frames_stage_samples(ref: Reference) -> None:
    """At the default fps, the frames stage picks exactly the labelled source frames, at the
    labelled times, as consecutive samples; the video is the one the file names."""
    video = opencv_clip("vtest.avi")
    info = probe(video)
    doc = json.loads(REFERENCE.read_text())
    assert (info.width, info.height, info.fps, info.frame_count) == (
        doc["width"],
        doc["height"],
        doc["fps"],
        doc["frame_count"],
    )
    wanted = {lf.index: lf.t for lf in ref.frames}
    picked: dict[int, tuple[int, float]] = {}
    for k, s in enumerate(sample(video, info, 1 / FPS, Pass())):
        if s.source_frame in wanted:
            picked[s.source_frame] = (k, s.t)
        if s.source_frame >= max(wanted):
            break
    assert sorted(picked) == sorted(wanted)
    for index, (_, t) in picked.items():
        assert t == pytest.approx(wanted[index], abs=1e-6)
    for frames in runs(ref).values():
        ks = [picked[lf.index][0] for lf in frames]
        assert ks == list(range(ks[0], ks[0] + len(ks)))


# --- the scorer -------------------------------------------------------------------------


def test_the_reference_itself_is_perfect(ref: Reference) -> None:
    """Tracks that are the labelled boxes (ignored people included) score 1, 1, 0 switches."""
    got = score(ref, tracks_from(ref), sampled_frames(ref))
    assert (got.precision, got.recall, got.id_switches) == (1.0, 1.0, 0)
    assert got.true_positives == got.labelled == ref.labelled
    assert (got.false_positives, got.false_negatives, got.scored, got.unscored) == (0, 0, 20, 0)


def test_boxes_off_the_people_find_no_one(ref: Reference) -> None:
    """Every labelled box moved right by 60% of its width: no match, each one a FP."""
    labelled_only = tracks_from(ref, keep=lambda p: not p.ignore, shift=0.6)
    got = score(ref, labelled_only, sampled_frames(ref))
    assert got.recall == 0.0 and got.true_positives == 0
    assert got.false_negatives == ref.labelled
    assert got.false_positives == ref.labelled
    assert got.precision == 0.0


def test_swapped_identities_are_two_switches(ref: Reference) -> None:
    """Two people's tracks trade ids half way through a run: exactly 2 ID switches, and
    detection is still perfect."""
    first = runs(ref)[1]
    always = set.intersection(*({p.id for p in lf.people if not p.ignore} for lf in first))
    a, b = sorted(always)[:2]
    halfway = first[len(first) // 2].index

    def track_of(lf: LabelledFrame, p: Person) -> int:
        if lf.run == 1 and lf.index >= halfway and p.id in (a, b):
            return b if p.id == a else a
        return p.id

    got = score(ref, tracks_from(ref, track_of=track_of), sampled_frames(ref))
    assert got.id_switches == 2
    assert (got.precision, got.recall) == (1.0, 1.0)
    switched = [f.index for f in got.frames if f.id_switches]
    assert switched == [halfway]


def test_predictions_on_ignored_people_cost_nothing(ref: Reference) -> None:
    """A box on a person marked ignore, or a piece of one inside their box, is not a FP."""
    ignored = [(lf, p) for lf in ref.frames for p in lf.people if p.ignore]
    assert ignored, "the reference has people marked ignore"
    only_ignored = tracks_from(ref, keep=lambda p: p.ignore)
    got = score(ref, only_ignored, sampled_frames(ref))
    assert (got.true_positives, got.false_positives) == (0, 0)
    assert sum(f.ignored for f in got.frames) == len(ignored)
    # The top half of each ignored box: too small for IoU 0.5, but inside the ignored box.
    for track in only_ignored["tracks"]:
        for ob in track["frames"]:
            ob["bbox"][3] = ob["bbox"][3] * 0.45
    got = score(ref, only_ignored, sampled_frames(ref))
    assert got.false_positives == 0


def test_a_half_size_sampled_frame_is_scaled_back(ref: Reference) -> None:
    """Frames sampled at 384x288 with the boxes halved still score perfectly."""
    half = tracks_from(ref, scale=0.5)
    assert (half["width"], half["height"]) == (384, 288)
    got = score(ref, half, sampled_frames(ref, size=(384, 288)))
    assert (got.precision, got.recall, got.id_switches) == (1.0, 1.0, 0)


def test_a_labelled_frame_with_no_sample_near_it_is_unscored(ref: Reference) -> None:
    """With the sample at the first labelled time missing, the samples either side are a
    whole interval away: that frame is unscored, the other 19 are scored as before."""
    first = ref.frames[0]
    got = score(ref, tracks_from(ref), sampled_frames(ref, drop=first.t))
    assert (got.scored, got.unscored) == (19, 1)
    assert next(f for f in got.frames if f.index == first.index).sampled is None
    assert got.labelled == ref.labelled - sum(not p.ignore for p in first.people)
    assert (got.precision, got.recall) == (1.0, 1.0)


def test_samples_that_end_before_the_labels_score_nothing(ref: Reference) -> None:
    """A job whose frames stop at 15 s (a cut-short video) reaches no labelled frame:
    nothing is scored, and an empty score is no pass (precision and recall 0)."""
    frames = sampled_frames(ref)
    frames["frames"] = [rec for rec in frames["frames"] if rec["t"] <= 15.0]
    got = score(ref, tracks_from(ref), frames)
    assert (got.scored, got.unscored, got.labelled) == (0, 20, 0)
    assert (got.precision, got.recall) == (0.0, 0.0)


def test_coarser_sampling_scores_each_sample_once(ref: Reference) -> None:
    """At 2 fps a sample is 0.5 s apart: each sampled frame is scored against the one
    labelled frame nearest it, and the labelled frames between samples are unscored."""
    frames = sampled_frames(ref, fps=2.0)
    got = score(ref, {"width": 768, "height": 576, "tracks": []}, frames)
    sampled = [f.sampled for f in got.frames if f.sampled is not None]
    assert len(sampled) == len(set(sampled)) == got.scored
    # Per run (20.0 ... 21.8 s): the samples at 20.0, 20.5, 21.0, 21.5 and 22.0 s, the
    # last 0.2 s from the label at 21.8, within half an interval (0.25 s).
    assert (got.scored, got.unscored) == (10, 10)
    assert got.false_negatives == got.labelled > 0


def test_cli_prints_the_score(
    ref: Reference, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m tests.perception.reference tracks.json frames_dir` prints JSON totals."""
    (tmp_path / "tracks.json").write_text(json.dumps(tracks_from(ref)))
    (tmp_path / "frames.json").write_text(json.dumps(sampled_frames(ref)))
    assert main([str(tmp_path / "tracks.json"), str(tmp_path), "--summary"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["precision"], out["recall"], out["id_switches"]) == (1.0, 1.0, 0)
    assert out["labelled"] == ref.labelled and "frames" not in out
