"""run_perception end to end: stages, resume after a crash, cancel, bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import msgspec
import pytest

from perception.config import PerceptionConfig
from perception.pipeline import run_perception
from perception.progress import Cancelled, InvalidInput
from perception.scene_facts import validate
from perception.segment import SegmenterUnavailable
from tests.perception.conftest import Recorder

HAVE_SAM2 = importlib.util.find_spec("sam2") is not None


def test_full_run(video: Path, tmp_path: Path, pcfg: PerceptionConfig, recorder: Recorder) -> None:
    """A run yields a valid scene_facts.json with the three moving objects (the static
    cabinet is background under a fixed camera: docs/perception.md) and reports each stage."""
    path = run_perception(video, tmp_path / "job", pcfg, recorder.reporter())
    assert path == tmp_path / "job" / "facts" / "scene_facts.json"
    doc = json.loads(path.read_text())
    validate(doc, "scene-facts")
    assert len(doc["tracks"]) == 3
    assert doc["video"]["frame_count"] == 15
    assert doc["model"]["name"] == "cpu-classical"
    assert recorder.stages == [
        ("frames", "started"),
        ("frames", "done"),
        ("segment", "started"),
        ("segment", "done"),
        ("facts", "started"),
        ("facts", "done"),
    ]
    for stage in ("frames", "segment", "facts"):
        fractions = [f for s, f in recorder.progress if s == stage]
        assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_resume_skips_finished_stages(
    video: Path, tmp_path: Path, pcfg: PerceptionConfig, recorder: Recorder
) -> None:
    """A re-run redoes only stages without a marker; frames are never re-extracted."""
    job = tmp_path / "job"
    first = run_perception(video, job, pcfg, recorder.reporter())
    before = first.read_bytes()
    frame_mtime = (job / "frames" / "000000.jpg").stat().st_mtime_ns
    tracks_mtime = (job / "segment" / "tracks.json").stat().st_mtime_ns
    (job / "facts.done").unlink()  # as if the worker died while writing facts

    again = Recorder()
    path = run_perception(video, job, pcfg, again.reporter())
    assert again.started() == ["facts"]
    assert (job / "frames" / "000000.jpg").stat().st_mtime_ns == frame_mtime
    assert (job / "segment" / "tracks.json").stat().st_mtime_ns == tracks_mtime
    assert path.read_bytes() == before

    (job / "segment.done").unlink()
    (job / "facts.done").unlink()
    third = Recorder()
    run_perception(video, job, pcfg, third.reporter())
    assert third.started() == ["segment", "facts"]
    assert (job / "frames" / "000000.jpg").stat().st_mtime_ns == frame_mtime

    done = Recorder()
    assert run_perception(video, job, pcfg, done.reporter()) == path
    assert done.started() == []


def test_crash_mid_stage_restarts_that_stage_clean(
    video: Path, tmp_path: Path, pcfg: PerceptionConfig
) -> None:
    """A crash inside segment: the retry keeps frames and redoes segment from scratch."""
    job = tmp_path / "job"
    crash = Recorder()

    def die(stage: str, fraction: float) -> None:
        if stage == "segment" and fraction > 0.5:
            raise RuntimeError("power cut")

    crash.fail = die
    with pytest.raises(RuntimeError, match="power cut"):
        run_perception(video, job, pcfg, crash.reporter())
    assert (job / "frames.done").exists() and not (job / "segment.done").exists()
    retry = Recorder()
    path = run_perception(video, job, pcfg, retry.reporter())
    assert retry.started() == ["segment", "facts"]
    assert len(json.loads(path.read_text())["tracks"]) == 3  # the moving shapes


def test_cancel_propagates_and_leaves_no_result(
    video: Path, tmp_path: Path, pcfg: PerceptionConfig
) -> None:
    """Cancelled from a progress callback stops the run with no marker and no facts."""
    cancel = Recorder()

    def stop(stage: str, fraction: float) -> None:
        if stage == "segment" and fraction > 0.2:
            raise Cancelled("job cancelled")

    cancel.fail = stop
    with pytest.raises(Cancelled):
        run_perception(video, tmp_path / "job", pcfg, cancel.reporter())
    assert not (tmp_path / "job" / "segment.done").exists()
    assert not (tmp_path / "job" / "facts" / "scene_facts.json").exists()
    assert max(f for s, f in cancel.progress if s == "segment") < 0.5


def test_cancel_during_frames(video: Path, tmp_path: Path, pcfg: PerceptionConfig) -> None:
    """Cancelled during frame extraction stops it there."""
    cancel = Recorder()

    def stop(stage: str, fraction: float) -> None:
        if stage == "frames" and fraction > 0.3:
            raise Cancelled("lease lost")

    cancel.fail = stop
    with pytest.raises(Cancelled):
        run_perception(video, tmp_path / "job", pcfg, cancel.reporter())
    assert not (tmp_path / "job" / "frames.done").exists()


def test_not_a_video(tmp_path: Path, pcfg: PerceptionConfig, recorder: Recorder) -> None:
    """A non-video upload is InvalidInput naming the file, and nothing is marked done."""
    bogus = tmp_path / "upload.mp4"
    bogus.write_text("<html>error page saved as a video</html>")
    with pytest.raises(InvalidInput, match=r"upload\.mp4"):
        run_perception(bogus, tmp_path / "job", pcfg, recorder.reporter())
    assert not (tmp_path / "job" / "frames.done").exists()
    assert recorder.started() == ["frames"]


def test_other_sampling_settings(video: Path, tmp_path: Path) -> None:
    """fps and max_side from the config shape the frames and the facts."""
    cfg = PerceptionConfig(fps=10.0, max_side=320)
    doc = json.loads(
        run_perception(video, tmp_path / "job", cfg, Recorder().reporter()).read_text()
    )
    assert doc["video"]["frame_count"] == 30
    assert (doc["video"]["width"], doc["video"]["height"]) == (320, 180)
    assert len(doc["tracks"]) == 3
    assert all(len(t["frames"]) == 30 for t in doc["tracks"])


def test_config_section_is_checked() -> None:
    """The [perception] section rejects unknown keys and out-of-range values."""
    cfg = msgspec.convert({"fps": 2, "segmenter": "sam2", "max_side": 0}, PerceptionConfig)
    assert (cfg.fps, cfg.segmenter, cfg.max_side) == (2.0, "sam2", 0)
    for bad in ({"fps": 0}, {"segmenter": "yolo"}, {"min_area_frac": 1.5}, {"fsp": 5}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, PerceptionConfig)


@pytest.mark.skipif(HAVE_SAM2, reason="sam2 is installed here")
def test_sam2_without_the_package_fails_fast(video: Path, tmp_path: Path) -> None:
    """segmenter = sam2 without the package fails before any frame is decoded."""
    cfg = PerceptionConfig(segmenter="sam2", sam2_checkpoint=str(tmp_path / "none.pt"))
    recorder = Recorder()
    with pytest.raises(SegmenterUnavailable, match="sam2"):
        run_perception(video, tmp_path / "job", cfg, recorder.reporter())
    assert recorder.started() == []  # no minutes of frame extraction first
