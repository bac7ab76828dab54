"""Phone-shaped inputs made from real footage, through both frame extractors and one job.

Each variant (`tests.perception.phone`) is made once per session. Every check runs the
perception extractor (`perception.frames`) and the splat one (`perception.splat.frames`),
and asserts what a crew would see: upright portrait frames, frames at the asked rate by
timestamp, 4K brought down to `max_side`, a sound track ignored, a long video sampled end
to end, a cut-short upload answered in seconds, and a clear refusal of what is not video.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import av
import cv2
import numpy as np
import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.worker import Worker
from perception.frames import extract_frames as perception_frames
from perception.progress import InvalidInput, Reporter
from perception.splat.frames import extract_frames as splat_frames
from perception.video import probe
from tests.appliance.test_api_uploads import make_location, upload
from tests.conftest import make_config, make_token
from tests.perception import phone
from tests.perception.phone import PhoneVideo
from tests.system.helpers import wait_job

T = TypeVar("T")
# A cut-short or bogus file must be answered this fast; a hang fails instead of blocking CI.
DEADLINE_S = 60.0
TERMINAL = {"succeeded", "failed", "dead", "cancelled"}


@dataclass(frozen=True)
class Extracted:
    """One extractor's output, in the terms both share."""

    summary: dict[str, Any]
    times: list[float]
    sources: list[int]
    files: list[Path]
    truncated: bool

    def image(self, i: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The i-th written frame, BGR."""
        img = cv2.imread(str(self.files[i]))
        assert img is not None, self.files[i]
        return np.asarray(img, np.uint8)


def _written(out: Path, summary: dict[str, Any], t_key: str, index_key: str) -> Extracted:
    doc = json.loads((out / "frames.json").read_text())
    recs = doc["frames"]
    times, sources = [r[t_key] for r in recs], [r[index_key] for r in recs]
    return Extracted(summary, times, sources, [out / r["file"] for r in recs], doc["truncated"])


def run_perception(video: Path, out: Path, *, fps: float, max_side: int, **_: Any) -> Extracted:
    """perception.frames.extract_frames, as a perception job calls it."""
    summary = perception_frames(video, out, fps=fps, max_side=max_side, reporter=Reporter())
    return _written(out, summary, "t", "source_frame")


def run_splat(
    video: Path, out: Path, *, fps: float, max_side: int, max_frames: int = 1000, blur: float = 0.0
) -> Extracted:
    """perception.splat.frames.extract_frames; no blur filter unless asked, so picks are exact."""
    out.mkdir(parents=True, exist_ok=True)
    summary = splat_frames(
        video,
        out,
        fps=fps,
        max_side=max_side,
        max_frames=max_frames,
        blur_ratio=blur,
        progress=lambda _: None,
    )
    return _written(out, summary, "time", "index")


Extract = Callable[..., Extracted]
EXTRACTORS: dict[str, Extract] = {"perception": run_perception, "splat": run_splat}


@pytest.fixture(params=sorted(EXTRACTORS))
def extract(request: pytest.FixtureRequest) -> Extract:
    """Each frame extractor in turn."""
    return EXTRACTORS[request.param]


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder of made phone videos."""
    return tmp_path_factory.mktemp("phone")


@pytest.fixture(scope="session")
def rotated(made: Path) -> dict[int, PhoneVideo]:
    """HEVC .mov portrait videos with a display matrix, by its angle."""
    # Held upright: 10-bit, as iPhones record by default; held the other way: 8-bit.
    return {
        -90: phone.rotated_mov(made / "IMG_0270.MOV", rotation=-90, ten_bit=True),
        90: phone.rotated_mov(made / "IMG_0090.MOV", rotation=90),
    }


@pytest.fixture(scope="session")
def portrait(made: Path) -> PhoneVideo:
    """H.264 stored upright in portrait."""
    return phone.portrait(made / "portrait.mp4")


@pytest.fixture(scope="session")
def vfr(made: Path) -> PhoneVideo:
    """Variable frame rate (30 to 10 fps) .mov."""
    return phone.vfr(made / "vfr.mov")


@pytest.fixture(scope="session")
def uhd(made: Path) -> PhoneVideo:
    """3840x2160 at 60 fps, 1 s."""
    return phone.uhd60(made / "uhd60.mp4")


@pytest.fixture(scope="session")
def sound(made: Path) -> tuple[PhoneVideo, PhoneVideo]:
    """The same picture with and without a sound track."""
    return phone.with_audio(made / "sound.mp4"), phone.with_audio(made / "mute.mp4", audio=False)


@pytest.fixture(scope="session")
def long(made: Path) -> PhoneVideo:
    """Ten minutes by its timestamps."""
    return phone.long_video(made / "long.mp4")


@pytest.fixture(scope="session")
def cut(made: Path) -> dict[str, PhoneVideo]:
    """A phone recording (index last) and a streaming export (index first), both cut at 60%."""
    late = phone.phone_mp4(made / "recorded.mp4", faststart=False)
    early = phone.phone_mp4(made / "exported.mp4", faststart=True)
    return {
        "index_last": replace(late, path=phone.cut_short(late.path, made / "recorded-cut.mp4")),
        "index_first": replace(early, path=phone.cut_short(early.path, made / "exported-cut.mp4")),
    }


@pytest.fixture(scope="session")
def bogus(made: Path) -> dict[str, Path]:
    """Files that are not videos, by name."""
    return phone.not_videos(made / "not-videos")


def within(seconds: float, fn: Callable[[], T]) -> T:
    """fn's result (or its exception), failing the test if it has not returned in time."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hang"
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def difference(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """Mean absolute difference of two BGR images, b resized to a's size."""
    if a.shape != b.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def expected_picks(times: list[float], every: float) -> list[int]:
    """The first frame at or after each multiple of `every` (a frame per grid point)."""
    picks: list[int] = []
    for i, t in enumerate(times):
        if not picks or t >= len(picks) * every - 1e-3:
            picks.append(i)
    return picks


def test_the_phone_mov_is_what_an_iphone_writes(rotated: dict[int, PhoneVideo]) -> None:
    """The made file really is HEVC (hvc1) in QuickTime, stored landscape, with the matrix."""
    for rotation, video in rotated.items():
        with av.open(str(video.path)) as container:
            stream = container.streams.video[0]
            assert "mov" in container.format.name
            assert (stream.codec_context.name, stream.codec_tag) == ("hevc", "hvc1")
            profile = "Main 10" if rotation == -90 else "Main"
            assert stream.codec_context.profile == profile
            assert stream.width > stream.height  # the sensor's landscape picture
        times, angle = phone.displayed(video.path)
        assert angle == rotation
        assert times == pytest.approx(video.times, abs=1e-3)


@pytest.mark.parametrize("rotation", [-90, 90])
def test_a_rotated_phone_video_comes_out_upright(
    extract: Extract, rotated: dict[int, PhoneVideo], tmp_path: Path, rotation: int
) -> None:
    """Portrait frames the right way up: what the phone's screen showed, not its sensor."""
    video = rotated[rotation]
    info = probe(video.path)
    assert (info.width, info.height) == (324, 576)
    got = extract(video.path, tmp_path / "f", fps=5, max_side=640)
    assert (got.summary["width"], got.summary["height"]) == (324, 576)
    assert len(got.files) == 10
    for i in (0, len(got.files) - 1):
        image = got.image(i)
        assert image.shape == (576, 324, 3)
        truth = video.frames[got.sources[i]]
        right = difference(image, truth)
        # Upside down or mirrored would be the same shape: the content must match too.
        assert right < 8, right
        assert difference(image, np.rot90(truth, 2)) > 4 * right
        assert difference(image, np.fliplr(truth)) > 4 * right


def test_a_portrait_video_stays_portrait_and_shrinks_by_its_long_side(
    extract: Extract, portrait: PhoneVideo, tmp_path: Path
) -> None:
    """A video stored upright in portrait: taller than wide, long side brought to max_side."""
    h, w = portrait.frames[0].shape[:2]
    got = extract(portrait.path, tmp_path / "f", fps=5, max_side=160)
    assert got.summary["height"] == 160
    assert got.summary["width"] == round(w * 160 / h)
    image = got.image(3)
    assert image.shape == (160, round(w * 160 / h), 3)
    assert difference(image, portrait.frames[got.sources[3]]) < 10


def test_variable_frame_rate_is_sampled_by_timestamp(
    extract: Extract, vfr: PhoneVideo, tmp_path: Path
) -> None:
    """5 fps from a video whose rate changes every frame: one frame each 0.2 s of its time."""
    assert phone.displayed(vfr.path)[0] == pytest.approx(vfr.times, abs=1e-3)
    steps = np.diff(expected_picks(vfr.times, 0.2))
    assert steps.min() < steps.max()  # really variable: every Nth frame would be wrong
    got = extract(vfr.path, tmp_path / "f", fps=5, max_side=640)
    assert got.sources == expected_picks(vfr.times, 0.2)
    assert got.times == pytest.approx([vfr.times[i] for i in got.sources], abs=1e-3)
    assert len(got.times) == 15
    gaps = np.diff(got.times)
    # Each pick is the first frame at or after k * 0.2 s; frames are at most 0.1 s apart.
    assert gaps.min() > 0.1 - 1e-3 and gaps.max() < 0.3 + 1e-3
    assert [round(t / 0.2) for t in got.times] == list(range(15))
    assert difference(got.image(7), vfr.frames[got.sources[7]]) < 10


def test_4k60_is_downscaled_and_sampled_at_the_asked_rate(
    extract: Extract, uhd: PhoneVideo, tmp_path: Path
) -> None:
    """3840x2160 at 60 fps, asked for 10 fps at 640: ten 640x360 frames, 0.1 s apart."""
    info = probe(uhd.path)
    assert (info.width, info.height, info.fps) == (3840, 2160, 60.0)
    got = extract(uhd.path, tmp_path / "f", fps=10, max_side=640)
    assert (got.summary["width"], got.summary["height"]) == (640, 360)
    assert got.sources == list(range(0, 60, 6))
    assert got.times == pytest.approx([i / 10 for i in range(10)], abs=1e-3)
    for i in (0, 9):
        image = got.image(i)
        assert image.shape == (360, 640, 3)
        assert difference(image, uhd.frames[got.sources[i]]) < 10


def test_a_sound_track_changes_nothing(
    extract: Extract, sound: tuple[PhoneVideo, PhoneVideo], tmp_path: Path
) -> None:
    """AAC sound as the file's first stream: the same frames as the silent copy."""
    loud, mute = sound
    with av.open(str(loud.path)) as container:
        assert [s.type for s in container.streams] == ["audio", "video"]
        assert container.streams.audio[0].codec_context.name == "aac"
    with_sound = extract(loud.path, tmp_path / "a", fps=5, max_side=640)
    silent = extract(mute.path, tmp_path / "b", fps=5, max_side=640)
    assert with_sound.sources == silent.sources and len(silent.sources) == 15
    assert with_sound.times == silent.times
    assert with_sound.summary["width"] == silent.summary["width"] == 640
    assert with_sound.truncated is silent.truncated is False
    for i in range(0, 15, 7):
        assert difference(with_sound.image(i), silent.image(i)) < 1.0


@pytest.mark.parametrize("name", sorted(EXTRACTORS))
def test_a_long_video_is_sampled_over_its_whole_length(
    name: str, long: PhoneVideo, tmp_path: Path
) -> None:
    """Ten minutes: samples from its first seconds to its last, evenly spread between."""
    assert probe(long.path).duration == pytest.approx(600.0)
    if name == "perception":
        got = run_perception(long.path, tmp_path / "f", fps=1 / 20, max_side=640)
        assert len(got.times) == 30
    else:
        # As a splat job runs: 4 fps asked (its default), capped by max_frames, blur filter on.
        got = run_splat(long.path, tmp_path / "f", fps=4, max_side=320, max_frames=20, blur=0.5)
        assert 15 <= len(got.times) <= 20
    assert got.times[0] == 0.0
    assert got.times[-1] >= 600 - 600 / len(got.times) - 1
    gaps = np.diff(got.times)
    assert gaps.max() <= 2.0 * 600 / len(got.times), gaps
    for i in (0, len(got.files) // 2, len(got.files) - 1):
        # Each sample is the picture at its time: the file was really read to its end.
        assert difference(got.image(i), long.frames[round(got.times[i])]) < 10


def test_a_cut_short_recording_is_refused_in_seconds(
    extract: Extract, cut: dict[str, PhoneVideo], tmp_path: Path
) -> None:
    """A phone recording that stopped before its index was written: InvalidInput saying so."""
    path = cut["index_last"].path
    with pytest.raises(InvalidInput, match=rf"^{re.escape(path.name)}: the file is cut short"):
        within(DEADLINE_S, lambda: extract(path, tmp_path / "f", fps=5, max_side=640))
    assert not (tmp_path / "f" / "frames.json").exists()


def test_a_cut_short_export_keeps_what_decoded_and_says_truncated(
    extract: Extract, cut: dict[str, PhoneVideo], tmp_path: Path
) -> None:
    """An upload cut at 60% whose index came first: the frames before the cut, truncated."""
    video = cut["index_first"]
    got = within(DEADLINE_S, lambda: extract(video.path, tmp_path / "f", fps=5, max_side=640))
    assert got.truncated is True and got.summary["truncated"] is True
    assert got.times[0] == 0.0
    assert 0.3 * video.duration < got.times[-1] < 0.75 * video.duration
    assert difference(got.image(len(got.files) - 1), video.frames[got.sources[-1]]) < 10


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("photo.jpg", "is a still image"),
        ("photo.mp4", "is a still image"),
        ("notes.txt", "is a text file"),
        ("notes.mov", "not a readable video"),
        ("noise.mp4", "not a readable video"),
        ("voice-memo.m4a", "has no video stream"),
    ],
)
def test_a_file_that_is_not_a_video_is_invalid_input(
    extract: Extract, bogus: dict[str, Path], tmp_path: Path, name: str, why: str
) -> None:
    """A photo, text, noise or sound alone: InvalidInput naming the file and what it is."""
    with pytest.raises(InvalidInput, match=rf"^{re.escape(name)}: {why}"):
        within(DEADLINE_S, lambda: extract(bogus[name], tmp_path / "f", fps=5, max_side=640))
    assert not (tmp_path / "f" / "frames.json").exists()


def test_a_cut_short_capture_fails_its_perception_job_once_with_the_reason(
    tmp_path: Path, cut: dict[str, PhoneVideo]
) -> None:
    """A capture upload cut short queues a perception job; the worker fails it for good,
    with the reason in its error and its events, and does not retry it."""
    cfg = make_config(
        tmp_path / "data",
        '[worker]\nauto_enqueue_capture = true\nkinds = ["perception"]\npoll_s = 0.05\n',
    )
    with TestClient(app=create_app(cfg)) as client:
        client.headers["Authorization"] = f"Bearer {make_token(cfg)}"
        make_location(client, "loc1")
        data = cut["index_last"].path.read_bytes()
        upload(client, data, filename="IMG_0042.MOV", kind="capture")
        (job,) = [j for j in client.get("/v1/jobs").json()["items"] if j["kind"] == "perception"]
        stop = threading.Event()
        worker = threading.Thread(target=Worker(cfg, stop).run, daemon=True)
        worker.start()
        try:
            done = wait_job(client, job["id"], TERMINAL, timeout=DEADLINE_S)
        finally:
            stop.set()
            worker.join(DEADLINE_S)
        events = client.get(f"/v1/jobs/{job['id']}/events").text
    assert done["status"] == "failed", done
    assert done["attempts"] == 1
    assert "the file is cut short before its index" in done["error"]
    assert "event: failed" in events and "the file is cut short" in events
    assert "retrying" not in events
