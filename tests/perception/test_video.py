"""The one video decoder (`perception.video`): display orientation and the shared decode.

The rotation tests write the display matrix as raw numbers, the way a phone's QuickTime
track header holds them, and work out what the player shows by applying that matrix to
pixel positions (QuickTime's rule: x' = a x + c y + tx, y' = b x + d y + ty, y down). So
they check the decoder against the file format, not against PyAV's own angle convention:
an iPhone held upright stores a = 0, b = 1, c = -1, d = 0, a quarter turn clockwise.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from perception.frames import extract_frames as perception_frames
from perception.progress import Reporter
from perception.segment.base import read_frame
from perception.splat.frames import extract_frames as splat_frames
from perception.video import Pass, decode, probe

Image = npt.NDArray[np.uint8]
ONE = 1 << 16  # 16.16 fixed point, as in the track header
W, H, FPS, COUNT = 320, 192, 10, 6

# (a, b, c, d) of the matrix, by how the phone was held.
MATRICES = {
    "portrait (iPhone upright)": (0, 1, -1, 0),
    "portrait upside down": (0, -1, 1, 0),
    "landscape, home button left": (-1, 0, 0, -1),
    "landscape, home button right": (1, 0, 0, 1),
}


def sensor_picture(i: int) -> Image:
    """A stored frame with no symmetry: four coloured quadrants, a bar at the top, frame i."""
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2, : W // 2] = (200, 40, 40)
    img[: H // 2, W // 2 :] = (40, 200, 40)
    img[H // 2 :, : W // 2] = (40, 40, 200)
    img[H // 2 :, W // 2 :] = (200, 200, 40)
    img[:12, 40:140] = 255  # the top edge, off centre: a flip or a half turn moves it
    img[H - 30 : H - 10, 20 + 20 * i : 40 + 20 * i] = 0  # what changes from frame to frame
    return img


def displayed(stored: Image, m: tuple[int, int, int, int]) -> Image:
    """What a player shows: each stored pixel moved by the matrix, then shifted on screen."""
    a, b, c, d = m
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    xd, yd = a * xs + c * ys, b * xs + d * ys
    # Pixel centres land on whole steps from the leftmost and topmost one.
    cols, rows = np.rint(xd - xd.min()).astype(int), np.rint(yd - yd.min()).astype(int)
    out = np.zeros((rows.max() + 1, cols.max() + 1, 3), np.uint8)
    out[rows, cols] = stored[ys.astype(int), xs.astype(int)]
    return out


def write_mov(path: Path, m: tuple[int, int, int, int]) -> Path:
    """A QuickTime .mov of the stored frames with the raw display matrix in its header."""
    a, b, c, d = m
    # The translation puts the turned picture back on screen, as an iPhone writes it.
    tx = max(0, -(a * W + c * H)) * ONE
    ty = max(0, -(b * W + d * H)) * ONE
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.options = {"crf": "10", "preset": "veryfast"}
        stream.set_display_matrix([a * ONE, b * ONE, 0, c * ONE, d * ONE, 0, tx, ty, 1 << 30])
        for i in range(COUNT):
            frame = av.VideoFrame.from_ndarray(sensor_picture(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def header_matrix(path: Path) -> tuple[int, ...]:
    """The (a, b, c, d) the file's track header holds, in whole units."""
    data = path.read_bytes()
    at = data.index(b"tkhd") + 4
    # version 0: flags, ctime, mtime, track id, reserved, duration, reserved[8], layer,
    # group, volume, reserved: 40 bytes to the matrix (version 1: 52).
    at += 40 if data[at] == 0 else 52
    raw = struct.unpack(">9i", data[at : at + 36])
    return tuple(v // ONE for v in (raw[0], raw[1], raw[3], raw[4]))


def difference(a: Image, b: Image) -> float:
    """Mean absolute difference of two same-shaped pictures."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.mark.parametrize("held", sorted(MATRICES))
def test_frames_come_out_as_the_phone_played_them(tmp_path: Path, held: str) -> None:
    """Each way of holding a phone: the decoded frames are what its screen showed."""
    m = MATRICES[held]
    video = write_mov(tmp_path / "IMG_0001.MOV", m)
    assert header_matrix(video) == m  # the file holds the phone's numbers, not ours
    info = probe(video)
    want = [displayed(sensor_picture(i), m)[..., ::-1] for i in range(COUNT)]  # RGB → BGR
    assert (info.height, info.width) == want[0].shape[:2]
    got = list(decode(video, info, 0.0, 0, Pass()))
    assert [f.source_frame for f in got] == list(range(COUNT))
    for frame, truth in zip(got, want, strict=True):
        assert frame.image.shape == truth.shape
        right = difference(frame.image, truth)
        assert right < 3, right
        # A wrong turn or a mirror is far off: the test tells them apart.
        for other in (np.rot90(truth, 2), np.fliplr(truth)):
            assert difference(frame.image, np.ascontiguousarray(other)) > 10 * right + 10


def test_an_iphone_portrait_video_turns_clockwise(tmp_path: Path) -> None:
    """An iPhone held upright: tall frames whose top is the sensor picture's left edge."""
    video = write_mov(tmp_path / "IMG_0002.MOV", MATRICES["portrait (iPhone upright)"])
    info = probe(video)
    assert (info.width, info.height, info.rotation) == (H, W, 270)  # -90: clockwise
    image = next(decode(video, info, 0.0, 0, Pass())).image
    assert image.shape == (W, H, 3)
    # The stored top bar (x 40..140) is now down the right edge, 40..140 from the top.
    assert image[90, H - 5].min() > 230
    assert image[W - 90, H - 5].max() < 230
    assert image[90, 5].max() < 230


def _both(video: Path, out: Path, fps: float, max_side: int) -> dict[str, list[dict[str, Any]]]:
    perception_frames(video, out / "p", fps=fps, max_side=max_side, reporter=Reporter())
    (out / "s").mkdir()
    splat_frames(
        video,
        out / "s",
        fps=fps,
        max_side=max_side,
        max_frames=100,
        blur_ratio=0.0,
        progress=lambda _: None,
    )
    return {k: json.loads((out / k / "frames.json").read_text())["frames"] for k in ("p", "s")}


def test_perception_and_splat_frames_are_the_same_frames(tmp_path: Path) -> None:
    """A perception and a splat job on one rotated video get the same frames, same size,
    same orientation, same sharpness scores: one decoder, not two that could drift."""
    video = write_mov(tmp_path / "IMG_0003.MOV", MATRICES["portrait (iPhone upright)"])
    docs = _both(video, tmp_path, fps=5.0, max_side=160)
    p, s = docs["p"], docs["s"]
    assert [f["source_frame"] for f in p] == [f["index"] for f in s] == [0, 2, 4]
    assert [f["t"] for f in p] == [f["time"] for f in s]
    assert [f["sharpness"] for f in p] == [f["sharpness"] for f in s]
    assert all(f["sharpness"] > 0 for f in p)
    for fp, fs in zip(p, s, strict=True):
        a = read_frame(tmp_path / "p" / fp["file"])
        b = read_frame(tmp_path / "s" / fs["file"])
        assert a.shape == b.shape == (160, 96, 3)  # portrait, long side 160
        assert difference(a, b) < 2  # only the two JPEG qualities differ
