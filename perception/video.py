"""The one PyAV video decoder: what every frame extractor (perception's, the splat's) reads.

`probe` says what a video holds as it is displayed; `decode` yields the frames picked by
timestamp, each turned to display orientation, downscaled and scored for sharpness. On the
way it refuses what is not a camera video (a photo, a text file, a cut-short MP4) and
notices a file that ends early.

Rotation: a phone stores portrait video as the sensor's landscape picture plus a display
matrix. PyAV reads the matrix back as `frame.rotation`, the angle in degrees it turns the
picture counter-clockwise (an iPhone held upright: -90, i.e. a quarter turn clockwise);
turning the decoded picture by that angle gives what the phone showed when it played.

Sharpness: the variance of the Laplacian of the grey picture at the size it is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from perception.progress import InvalidInput

# FFmpeg renders text files as "ANSI art" video; a capture is never one.
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
# A file whose frames stop this long before its declared duration was cut short. Demuxers
# and encoders disagree about the last frame's length by a frame or two, never by this.
TRUNCATED_SLACK_S = 0.5
TRUNCATED_SLACK_FRAMES = 3
# Frames are picked at or after each sample time, less this: float timestamps of a 30 fps
# video must not turn 30 → 5 fps into "every 6th frame, sometimes the 7th".
PICK_EPSILON_S = 1e-3


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, as displayed (width and height after any rotation tag)."""

    frame_count: int
    fps: float
    width: int
    height: int
    duration: float
    rotation: int = 0
    codec: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class Pass:
    """What one `sample` pass found: frames decoded, and whether the file ended early."""

    decoded: int = 0
    truncated: bool = False


@dataclass(frozen=True)
class Sample:
    """A picked frame: its decode-order index, its time from the video's start, the frame."""

    source_frame: int
    t: float
    frame: Any


def _open(video: Path) -> Any:
    try:
        return av.open(str(video))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        if _index_missing(video):
            raise InvalidInput(
                f"{video.name}: the file is cut short before its index (moov): the upload or "
                "the recording did not finish, and nothing in it can be decoded"
            ) from err
        raise InvalidInput(f"{video.name}: not a readable video ({_why(err)})") from err


def _why(err: BaseException) -> str:
    # FFmpeg errors carry errno + message + filename; the message alone is what helps.
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _index_missing(video: Path) -> bool:
    """True for an MP4/MOV whose top-level boxes run past the end or lack the moov index."""
    try:
        size = video.stat().st_size
        with open(video, "rb") as fh:
            offset, kinds = 0, []
            while offset + 8 <= size:
                fh.seek(offset)
                head = fh.read(16)
                length, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if length == 1 and len(head) == 16:
                    length = int.from_bytes(head[8:16], "big")  # 64-bit size (large mdat)
                elif length == 0:
                    length = size - offset  # "to the end of the file"
                if length < 8 or not kind.isalnum():
                    break  # not a box: this is not an MP4/MOV at all
                kinds.append(kind)
                if offset + length > size:
                    return kinds[0] in (b"ftyp", b"wide", b"mdat", b"free")
                offset += length
    except OSError:
        return False
    return bool(kinds) and kinds[0] in (b"ftyp", b"wide") and b"moov" not in kinds


def _video_stream(container: Any, video: Path) -> Any:
    # FFmpeg opens a photo as a one-frame "video"; a capture needs motion, so refuse it.
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        raise InvalidInput(f"{video.name}: is a still image, not a video")
    streams = list(container.streams.video)
    if not streams:
        raise InvalidInput(f"{video.name}: has no video stream")
    if streams[0].codec_context.name in TEXT_CODECS:
        raise InvalidInput(f"{video.name}: is a text file, not a video")
    return streams[0]


def probe(video: Path) -> VideoInfo:
    """Frame count, fps, size and duration of a video; InvalidInput when it cannot be decoded."""
    if not video.is_file():
        raise InvalidInput(f"{video.name}: no such file")
    with _open(video) as container:
        stream = _video_stream(container, video)
        first = None
        try:
            # Decoding one frame is the only way to know the payload is really video.
            for frame in container.decode(stream):
                first = frame
                break
        except (av.FFmpegError, ValueError) as err:
            raise InvalidInput(f"{video.name}: not a decodable video ({_why(err)})") from err
        if first is None:
            raise InvalidInput(f"{video.name}: the video stream has no frames")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        count = int(stream.frames or 0)
        if count <= 0 and fps > 0 and duration > 0:
            count = round(duration * fps)  # containers without an index (e.g. raw, some mkv)
        if fps <= 0 and count > 0 and duration > 0:
            fps = count / duration
        rotation = _rotation(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            frame_count=count,
            fps=round(fps, 6),
            width=width,
            height=height,
            duration=round(duration, 6),
            rotation=rotation,
            codec=stream.codec_context.name,
        )


def _rotation(frame: Any) -> int:
    """The display matrix's turn, counter-clockwise, as 0, 90, 180 or 270."""
    try:
        angle = float(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        return 0
    # Phones tag portrait video; only right angles occur in practice.
    return int(round(angle / 90.0) * 90) % 360


def sample(video: Path, info: VideoInfo, interval: float, result: Pass) -> Iterator[Sample]:
    """Decode `video`, yielding the first frame at or after every `interval` seconds (0: all).

    Times are presentation timestamps from the stream's start, so variable frame rate is
    sampled evenly in time. A file that stops decoding part way, or whose frames end well
    before its declared duration, sets `result.truncated`; InvalidInput if nothing decodes.
    """
    with _open(video) as container:
        stream = _video_stream(container, video)
        stream.thread_type = "AUTO"  # frame + slice threads: decode is most of the work
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        frames = container.decode(stream)
        next_t: float | None = None
        last_t = 0.0
        while True:
            try:
                frame = next(frames, None)
            except (av.FFmpegError, ValueError) as err:
                # A damaged tail (an upload cut short) still leaves usable frames before it.
                if not result.decoded:
                    raise InvalidInput(
                        f"{video.name}: not a decodable video ({_why(err)})"
                    ) from err
                result.truncated = True
                break
            if frame is None:
                break
            index = result.decoded
            result.decoded += 1
            t = _frame_time(frame, start, index, info.fps)
            last_t = max(last_t, t)
            if next_t is not None and t < next_t - PICK_EPSILON_S:
                continue
            if interval > 0:
                next_t = (next_t if next_t is not None else t) + interval
                while next_t <= t:  # a gap in the video: do not emit a burst to catch up
                    next_t += interval
            yield Sample(index, t, frame)
    if not result.decoded:
        raise InvalidInput(f"{video.name}: no frames could be decoded")
    frame_s = 1.0 / info.fps if info.fps > 0 else 0.0
    slack = max(TRUNCATED_SLACK_S, TRUNCATED_SLACK_FRAMES * frame_s)
    if info.duration > 0 and last_t + frame_s + slack < info.duration:
        result.truncated = True  # the index promised more than the file holds


def _frame_time(frame: Any, start: float, index: int, fps: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base) - start
    return index / fps if fps > 0 else float(index)  # no timestamps: assume constant rate


def upright(frame: Any, info: VideoInfo, max_side: int) -> npt.NDArray[np.uint8]:
    """The frame as BGR, turned upright by the video's display matrix, longer side ≤ max_side."""
    out_w, out_h = output_size(info.width, info.height, max_side)
    # Sizes are for the displayed (rotated) picture; the decoder's is transposed.
    width, height = (out_h, out_w) if info.rotation in (90, 270) else (out_w, out_h)
    if (frame.width, frame.height) != (width, height):
        # swscale's area filter: resize during colour conversion, no full-size copy.
        frame = frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA")
    image: npt.NDArray[np.uint8] = frame.to_ndarray(format="bgr24")
    if info.rotation:
        # `rotation` is counter-clockwise (PyAV's `frame.rotation`, FFmpeg's
        # av_display_rotation_get), and so is numpy's rot90 on a rows-down image.
        image = np.ascontiguousarray(np.rot90(image, k=info.rotation // 90))
    return image


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size frames are written at: longer side at most `max_side`, aspect kept."""
    if max_side <= 0 or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def sharpness(image: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grey image (BGR or grey in): low means blurred."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    # The Laplacian of 8-bit pixels is a small integer, exact in float32; the variance of
    # a few hundred thousand of them needs float64 to come out the same on every caller.
    return float(cv2.Laplacian(grey, cv2.CV_32F).var(dtype=np.float64))


@dataclass(frozen=True)
class Frame:
    """A decoded frame as displayed: decode-order index, time, BGR picture, its sharpness."""

    source_frame: int
    t: float
    image: npt.NDArray[np.uint8]
    sharpness: float


def decode(
    video: Path, info: VideoInfo, interval: float, max_side: int, result: Pass
) -> Iterator[Frame]:
    """The frames `sample` picks, upright, longer side at most `max_side`, with sharpness."""
    for picked in sample(video, info, interval, result):
        image = upright(picked.frame, info, max_side)
        yield Frame(picked.source_frame, picked.t, image, sharpness(image))


__all__ = [
    "Frame",
    "Pass",
    "Sample",
    "VideoInfo",
    "decode",
    "output_size",
    "probe",
    "sample",
    "sharpness",
    "upright",
]
