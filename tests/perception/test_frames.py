"""Frame sampling: what a splat or segmenter stage gets from an uploaded video."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.frames import extract_frames, frame_paths
from perception.progress import InvalidInput, Reporter
from perception.segment.base import read_frame
from perception.video import output_size, probe
from tests.perception.conftest import Recorder
from tests.perception.synthetic import SHAPES, Image, background, draw, write_video


def test_probe_reads_what_the_video_is(video: Path) -> None:
    """probe reports the frame count, rate, size, duration and codec of an upload."""
    info = probe(video)
    assert (info.width, info.height) == (640, 360)
    assert info.fps == pytest.approx(20.0)
    assert info.frame_count == 60
    assert info.duration == pytest.approx(3.0, abs=0.06)
    assert info.codec == "h264"


def test_sampling_by_time(video: Path, tmp_path: Path, recorder: Recorder) -> None:
    """5 fps from a 20 fps video: every 4th frame, right timestamps, the right picture."""
    summary = extract_frames(video, tmp_path, fps=5.0, max_side=640, reporter=recorder.reporter())
    doc = json.loads((tmp_path / "frames.json").read_text())
    assert summary["frames"] == len(doc["frames"]) == 15
    # 20 fps sampled at 5 fps: every 4th source frame, 0.2 s apart.
    assert [f["source_frame"] for f in doc["frames"]] == list(range(0, 60, 4))
    assert [f["t"] for f in doc["frames"]] == pytest.approx([i * 0.2 for i in range(15)])
    assert [p.name for p in frame_paths(tmp_path)] == [f"{i:06d}.jpg" for i in range(15)]
    image = read_frame(tmp_path / "000005.jpg")
    assert image.shape == (360, 640, 3)
    # The frame is the scene at t = 1.0 s: the red circle's centre is red.
    cx, cy = SHAPES[1].centre(1.0)
    b, g, r = image[round(cy), round(cx)]
    assert r > 150 and g < 90 and b < 90
    fractions = [f for s, f in recorder.progress if s == "frames"]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_faster_than_source_keeps_every_frame(video: Path, tmp_path: Path) -> None:
    """Asking for more fps than the video has keeps every frame, once."""
    summary = extract_frames(video, tmp_path, fps=60.0, max_side=640, reporter=Reporter())
    assert summary["frames"] == 60
    assert summary["fps"] == pytest.approx(20.0)


def test_resize_keeps_aspect_and_never_upscales(tmp_path: Path) -> None:
    """Frames shrink to max_side with their aspect; max_side 0 or a small video keeps the size."""
    big = write_video(tmp_path / "big.mp4", seconds=0.5, scale=2.0)
    summary = extract_frames(big, tmp_path / "a", fps=5, max_side=640, reporter=Reporter())
    assert (summary["width"], summary["height"]) == (640, 360)
    assert read_frame(tmp_path / "a" / "000000.jpg").shape == (360, 640, 3)
    same = extract_frames(big, tmp_path / "b", fps=5, max_side=0, reporter=Reporter())
    assert (same["width"], same["height"]) == (1280, 720)
    assert output_size(640, 360, 2000) == (640, 360)
    assert output_size(1080, 1920, 640) == (360, 640)


def test_portrait_phone_video_comes_out_upright(tmp_path: Path) -> None:
    """A rotation-tagged (portrait phone) video yields upright frames."""
    # Phones store portrait video landscape with a rotation tag; frames must be upright.
    tagged = write_video(tmp_path / "portrait.mp4", seconds=0.5, rotate=90)
    info = probe(tagged)
    assert (info.width, info.height, info.rotation) == (360, 640, 90)
    extract_frames(tagged, tmp_path / "f", fps=5, max_side=640, reporter=Reporter())
    image = read_frame(tmp_path / "f" / "000000.jpg")
    assert image.shape == (640, 360, 3)
    # Rotated 90° counter-clockwise: the cabinet at (560, 75) is now at (75, 639 - 560).
    assert np.abs(image[639 - 560, 75].astype(int) - (150, 120, 90)).max() < 25


def test_sharpness_flags_blurred_frames(tmp_path: Path) -> None:
    """frames.json scores blurred frames far below sharp ones (the splat stage drops them)."""

    def blurry_second_half(t: float, base: Image) -> Image:
        img = draw(t, base)
        return np.asarray(cv2.GaussianBlur(img, (0, 0), 3.0)) if t >= 0.5 else img

    clip = write_video(tmp_path / "blur.mp4", seconds=1.0, frame_fn=blurry_second_half)
    extract_frames(clip, tmp_path / "f", fps=10, max_side=640, reporter=Reporter())
    scores = [
        f["sharpness"] for f in json.loads((tmp_path / "f/frames.json").read_text())["frames"]
    ]
    assert len(scores) == 10
    assert min(scores[:5]) > 5 * max(scores[5:])


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.mp4", b"this is a text file, not a video\n" * 100),
        ("empty.mov", b""),
        ("image.mp4", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
    ],
)
def test_not_a_video_is_invalid_input(tmp_path: Path, name: str, content: bytes) -> None:
    """Text, empty or image bytes named .mp4 are InvalidInput naming the file, no frames.json."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match=name):
        probe(path)
    with pytest.raises(InvalidInput):
        extract_frames(path, tmp_path / "out", fps=5, max_side=640, reporter=Reporter())
    assert not (tmp_path / "out" / "frames.json").exists()


def test_a_photo_is_not_a_video(tmp_path: Path) -> None:
    """A real image uploaded as the capture video is refused as a still image."""
    photo = tmp_path / "site.jpg"
    cv2.imwrite(str(photo), draw(0.0, background()))
    with pytest.raises(InvalidInput, match="still image"):
        probe(photo)


def test_missing_file_and_cut_short_upload_are_invalid_input(video: Path, tmp_path: Path) -> None:
    """A missing file or an mp4 cut in half is InvalidInput saying why, not a crash."""
    with pytest.raises(InvalidInput, match="no such file"):
        probe(tmp_path / "gone.mp4")
    # An mp4 cut in half has lost its index (written last): not decodable, and the error
    # tells the crew the upload is incomplete rather than "invalid data".
    half = tmp_path / "half.mp4"
    half.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(InvalidInput, match=r"half\.mp4: the file is cut short"):
        extract_frames(half, tmp_path / "out", fps=5, max_side=640, reporter=Reporter())
