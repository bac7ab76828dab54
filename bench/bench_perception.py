"""CPU segmenter throughput at 640x360 on one core, against the ≥ 10 frames/s target.

Frames are extracted first; only `CpuTracker.track` is timed (reading JPEGs included, as in
the pipeline). Side by side in the same run: reading the frames alone (the floor) and
OpenCV's MOG2 background subtractor + connected components (a classical reference without
tracking), so the table shows ratios that survive a slower or faster machine.

    .venv/bin/python bench/bench_perception.py [--seconds 10] [--fps 10]

`measure_segmenter_fps()` is importable for other benches.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perception.config import PerceptionConfig  # noqa: E402
from perception.frames import extract_frames, frame_paths  # noqa: E402
from perception.progress import Reporter  # noqa: E402
from perception.segment.base import read_frame  # noqa: E402
from perception.segment.cpu import CpuTracker  # noqa: E402
from tests.perception.synthetic import SHAPES, Image, Shape, draw, write_video  # noqa: E402

TARGET_FPS = 10.0


def one_core() -> str:
    """Pin this process to one CPU and OpenCV to one thread; say which."""
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"cpu {cpu}"
    return "unpinned"


def clutter_shapes(n: int = 40, seed: int = 5) -> tuple[Shape, ...]:
    """Many flat-coloured things, some moving: a busier room than the test scene."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        start = (float(rng.uniform(40, 600)), float(rng.uniform(30, 330)))
        speed = (float(rng.uniform(-40, 40)), float(rng.uniform(-20, 20))) if i % 3 else (0.0, 0.0)
        kind = ("circle", "square", "ellipse")[i % 3]
        size = int(rng.integers(14, 30))
        out.append(Shape(f"s{i}", (colour[0], colour[1], colour[2]), start, speed, kind, size))
    return tuple(out)


def make_frames(work: Path, *, seconds: float, fps: float, busy: bool) -> Path:
    """A synthetic 640x360 video sampled to JPEG frames; returns the frames dir."""
    shapes = SHAPES + clutter_shapes() if busy else SHAPES

    def frame(t: float, base: Image) -> Image:
        return draw(t, base, shapes)

    name = "busy" if busy else "plain"
    video = write_video(work / f"{name}.mp4", seconds=seconds, fps=30, frame_fn=frame)
    frames = work / f"{name}-frames"
    extract_frames(video, frames, fps=fps, max_side=640, reporter=Reporter())
    return frames


def time_it(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best of `repeat` wall times, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def read_only(frames: Path) -> None:
    """The floor: decode every frame JPEG."""
    for path in frame_paths(frames):
        read_frame(path)


def mog2_reference(frames: Path) -> None:
    """MOG2 foreground + connected components per frame, no tracking, no RLE."""
    sub = cv2.createBackgroundSubtractorMOG2(history=50, detectShadows=False)
    for path in frame_paths(frames):
        fg = sub.apply(read_frame(path))
        cv2.connectedComponentsWithStats((fg > 0).astype(np.uint8), connectivity=4)


def run_tracker(frames: Path, out: Path) -> None:
    """The CPU segmenter as the pipeline runs it."""
    out.mkdir(parents=True, exist_ok=True)
    CpuTracker(PerceptionConfig()).track(frames, out, Reporter())


def measure_segmenter_fps(seconds: float = 6.0, fps: float = 10.0, busy: bool = False) -> float:
    """CPU segmenter frames/s at 640x360 on one core (track only, frames pre-extracted)."""
    one_core()
    with tempfile.TemporaryDirectory(prefix="bench-perception-") as tmp:
        frames = make_frames(Path(tmp), seconds=seconds, fps=fps, busy=busy)
        n = len(frame_paths(frames))
        return n / time_it(lambda: run_tracker(frames, Path(tmp) / "seg"))


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="video length")
    parser.add_argument("--fps", type=float, default=10.0, help="frames sampled per second")
    args = parser.parse_args()
    pinned = one_core()
    print(f"CPU segmenter, 640x360, one core ({pinned}), target >= {TARGET_FPS:g} frames/s\n")
    header = f"{'scene':<7} {'what':<28} {'frames':>6} {'s':>7} {'frames/s':>9} {'x read':>7}"
    print(header)
    print("-" * len(header))
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="bench-perception-") as tmp:
        for busy in (False, True):
            scene = "busy" if busy else "plain"
            frames = make_frames(Path(tmp), seconds=args.seconds, fps=args.fps, busy=busy)
            n = len(frame_paths(frames))
            out = Path(tmp) / f"seg-{scene}"
            rows = [
                ("read JPEGs only (floor)", time_it(partial(read_only, frames))),
                ("MOG2 + components (ref)", time_it(partial(mog2_reference, frames))),
                ("cpu-classical track", time_it(partial(run_tracker, frames, out))),
            ]
            floor = rows[0][1]
            for what, secs in rows:
                rate, ratio = n / secs, secs / floor
                print(f"{scene:<7} {what:<28} {n:>6} {secs:>7.3f} {rate:>9.1f} {ratio:>7.2f}")
            verdicts.append((scene, n / rows[2][1]))
    print()
    for scene, rate in verdicts:
        ok = "meets" if rate >= TARGET_FPS else "MISSES"
        print(f"{scene}: {rate:.1f} frames/s {ok} the {TARGET_FPS:g} frames/s target")


if __name__ == "__main__":
    main()
