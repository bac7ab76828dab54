"""Fixtures: a synthetic scene filmed from known poses, and one CPU run of the pipeline on it.

The pipeline run is shared (module scope would rerun it per file): SfM plus a short
training take about a minute and a half on 2 cores, and every check reads its outputs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from perception.progress import Reporter
from perception.splat import SplatConfig, run_splat
from perception.splat.synthetic import Pose, write_video

pytest.importorskip("torch")
pytest.importorskip("pycolmap")

FRAMES = 48
BLURRED = (20,)
# Few steps: the test checks that training works and converges, not splat quality.
TEST_ITERATIONS = 150


def splat_config(**changes: Any) -> SplatConfig:
    """The CPU config the tests run: every frame of the 48, short training."""
    base: dict[str, Any] = {
        "fps": 0,
        "iterations": TEST_ITERATIONS,
        "max_gaussians": 6000,
        "checkpoint_every": 50,
        "device": "cpu",
    }
    return SplatConfig(**{**base, **changes})


@dataclass
class Events:
    """What a Reporter saw: stage events with their summaries, and progress."""

    stages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    progress: list[tuple[str, float]] = field(default_factory=list)

    def reporter(self) -> Reporter:
        """A Reporter recording into this object."""
        return Reporter(
            on_stage=lambda s, e, info: self.stages.append((s, e, info)),
            on_progress=lambda s, f: self.progress.append((s, f)),
        )

    def started(self) -> list[str]:
        """The stages that started, in order."""
        return [s for s, e, _ in self.stages if e == "started"]


@dataclass
class SplatRun:
    """One finished pipeline run on the synthetic video."""

    video: Path
    poses: list[Pose]
    work_dir: Path
    ply: Path
    events: Events
    seconds: float

    def summary(self, stage: str) -> dict[str, Any]:
        """The `.done` summary a stage left."""
        data: dict[str, Any] = json.loads((self.work_dir / f"{stage}.done").read_text())
        return data


@pytest.fixture(scope="session")
def scene_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Pose]]:
    """48 frames at 320x240 orbiting the synthetic room (frame 20 blurred), and the true poses."""
    path = tmp_path_factory.mktemp("splat-video") / "room.mp4"
    poses = write_video(path, frames=FRAMES, blur_frames=BLURRED)
    return path, poses


@pytest.fixture(scope="session")
def splat_run(
    scene_video: tuple[Path, list[Pose]], tmp_path_factory: pytest.TempPathFactory
) -> SplatRun:
    """The whole pipeline, once, on CPU."""
    video, poses = scene_video
    work = tmp_path_factory.mktemp("splat-job")
    events = Events()
    started = time.monotonic()
    ply = run_splat(video, work, splat_config(), events.reporter())
    return SplatRun(video, poses, work, ply, events, time.monotonic() - started)
