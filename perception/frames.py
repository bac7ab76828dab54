"""Video probing and frame sampling with PyAV: the first stage of every perception pipeline.

`extract_frames` writes `out_dir/000000.jpg, 000001.jpg, ...` (numbered from 0 so SAM 2's
frame loader reads the folder as it is) and `out_dir/frames.json`:

    {"source": {VideoInfo}, "fps": sampled fps, "width": w, "height": h, "truncated": bool,
     "frames": [{"index": i, "file": "000000.jpg", "source_frame": n, "t": seconds,
                 "sharpness": variance of the Laplacian}, ...]}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from perception.progress import InvalidInput, Reporter

FRAMES_JSON = "frames.json"
JPEG_QUALITY = 92


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


def _open(video: Path) -> Any:
    try:
        return av.open(str(video))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
        raise InvalidInput(f"{video.name}: not a readable video ({_why(err)})") from err


def _why(err: BaseException) -> str:
    # FFmpeg errors carry errno + message + filename; the message alone is what helps.
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _video_stream(container: Any, video: Path) -> Any:
    # FFmpeg opens a photo as a one-frame "video"; a capture needs motion, so refuse it.
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        raise InvalidInput(f"{video.name}: is a still image, not a video")
    streams = list(container.streams.video)
    if not streams:
        raise InvalidInput(f"{video.name}: has no video stream")
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
        if rotation in (90, -90, 270):
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
    try:
        angle = int(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        return 0
    # Phones tag portrait video; only right angles occur in practice.
    return int(round(angle / 90.0) * 90) % 360 if angle else 0


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size frames are written at: longer side at most `max_side`, aspect kept."""
    if max_side <= 0 or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def sharpness(image: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grey image: low means blurred."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def extract_frames(
    video: Path,
    out_dir: Path,
    *,
    fps: float,
    max_side: int,
    reporter: Reporter,
    stage: str = "frames",
) -> dict[str, Any]:
    """Sample frames at `fps` into `out_dir` as JPEGs plus frames.json; return a summary."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    info = probe(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    reporter.progress(stage, 0.0)
    # Sizes are computed for the displayed (rotated) frame; the decoder's size is transposed.
    out_w, out_h = output_size(info.width, info.height, max_side)
    dec_w, dec_h = (out_h, out_w) if info.rotation in (90, 270) else (out_w, out_h)
    step = 1.0 / fps
    records: list[dict[str, Any]] = []
    truncated = False
    next_t: float | None = None
    last_reported = 0.0
    with _open(video) as container:
        stream = _video_stream(container, video)
        stream.thread_type = "AUTO"  # frame + slice threads: decode is most of this stage
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        source_index = -1
        try:
            for frame in container.decode(stream):
                source_index += 1
                t = _frame_time(frame, start, source_index, info.fps)
                # Time-based selection: correct for variable frame rate, and a small epsilon
                # keeps 30 fps → 5 fps at exactly every 6th frame despite float timestamps.
                if next_t is not None and t < next_t - 1e-3:
                    continue
                next_t = (next_t if next_t is not None else t) + step
                while next_t <= t:  # a gap in the video: do not emit a burst to catch up
                    next_t += step
                image = _to_bgr(frame, dec_w, dec_h, info.rotation)
                name = f"{len(records):06d}.jpg"
                if not cv2.imwrite(
                    str(out_dir / name), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
                ):
                    raise OSError(f"could not write {out_dir / name}")
                records.append(
                    {
                        "index": len(records),
                        "file": name,
                        "source_frame": source_index,
                        "t": round(t, 4),
                        "sharpness": round(sharpness(image), 3),
                    }
                )
                if info.duration > 0 and t / info.duration - last_reported >= 0.01:
                    last_reported = t / info.duration
                    reporter.progress(stage, last_reported)
        except (av.FFmpegError, ValueError) as err:
            # A damaged tail (an upload cut short) still leaves usable frames before it.
            if not records:
                raise InvalidInput(f"{video.name}: not a decodable video ({_why(err)})") from err
            truncated = True
    if not records:
        raise InvalidInput(f"{video.name}: no frames could be decoded")
    doc = {
        "source": info.to_json(),
        "fps": fps if fps < info.fps or info.fps <= 0 else info.fps,
        "width": out_w,
        "height": out_h,
        "truncated": truncated,
        "frames": records,
    }
    write_json_atomic(out_dir / FRAMES_JSON, doc)
    reporter.progress(stage, 1.0)
    return {
        "frames": len(records),
        "width": out_w,
        "height": out_h,
        "fps": doc["fps"],
        "source_fps": info.fps,
        "duration": info.duration,
        "truncated": truncated,
    }


def _frame_time(frame: Any, start: float, index: int, fps: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base) - start
    return index / fps if fps > 0 else float(index)  # no timestamps: assume constant rate


def _to_bgr(frame: Any, width: int, height: int, rotation: int) -> npt.NDArray[np.uint8]:
    if (frame.width, frame.height) != (width, height):
        # swscale's area filter: resize during colour conversion, no full-size copy.
        frame = frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA")
    image: npt.NDArray[np.uint8] = frame.to_ndarray(format="bgr24")
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image


def load_frames(frames_dir: Path) -> dict[str, Any]:
    """The frames.json that `extract_frames` wrote in `frames_dir`."""
    doc: dict[str, Any] = json.loads((frames_dir / FRAMES_JSON).read_text())
    return doc


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write JSON through a temp file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"), allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def frame_paths(frames_dir: Path) -> list[Path]:
    """The frame JPEGs in order."""
    return [frames_dir / rec["file"] for rec in load_frames(frames_dir)["frames"]]


__all__ = [
    "FRAMES_JSON",
    "VideoInfo",
    "extract_frames",
    "frame_paths",
    "load_frames",
    "output_size",
    "probe",
    "sharpness",
    "write_json_atomic",
]
