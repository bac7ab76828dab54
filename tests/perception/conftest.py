"""Fixtures: the synthetic walk-through video (H.264 via PyAV) and its sampled frames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from perception.config import PerceptionConfig
from perception.frames import extract_frames
from perception.progress import Reporter
from tests.perception.synthetic import write_video


@pytest.fixture(scope="session")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """640x360, 3 s at 20 fps: textured background, a static box, three moving shapes."""
    return write_video(tmp_path_factory.mktemp("video") / "walkthrough.mp4")


@pytest.fixture(scope="session")
def frames_dir(video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The video sampled at 5 fps (15 frames), shared read-only by the segmenter tests."""
    out = tmp_path_factory.mktemp("frames")
    extract_frames(video, out, fps=5.0, max_side=640, reporter=Reporter())
    return out


@pytest.fixture
def pcfg() -> PerceptionConfig:
    """The default perception config: CPU segmenter, 5 fps, 640 px."""
    return PerceptionConfig()


@dataclass
class Recorder:
    """A Reporter's callbacks that remember every event and can fail on cue."""

    stages: list[tuple[str, str]] = field(default_factory=list)
    progress: list[tuple[str, float]] = field(default_factory=list)
    fail: Callable[[str, float], None] | None = None

    def reporter(self) -> Reporter:
        """A Reporter wired to this recorder."""
        return Reporter(on_stage=self._on_stage, on_progress=self._on_progress)

    def _on_stage(self, stage: str, event: str, info: dict[str, object]) -> None:
        self.stages.append((stage, event))

    def _on_progress(self, stage: str, fraction: float) -> None:
        self.progress.append((stage, fraction))
        if self.fail is not None:
            self.fail(stage, fraction)

    def started(self) -> list[str]:
        """The stages that started, in order."""
        return [s for s, e in self.stages if e == "started"]


@pytest.fixture
def recorder() -> Recorder:
    """A fresh Recorder."""
    return Recorder()
