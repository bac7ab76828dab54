"""Progress, cancellation and resumable stages: what every perception pipeline reports through.

A pipeline runs in a work dir. Each stage writes its outputs under `{work_dir}/{stage}/`
and, once they are on disk (fsynced), a marker `{work_dir}/{stage}.done` holding a small
JSON summary. A pipeline run again on the same work dir (a retry after a crash) skips every
stage whose marker exists and resumes at the first unfinished one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.files import atomic_write, fsync_dir, sync_tree

Json = dict[str, Any]


class Cancelled(Exception):
    """Raised from a progress callback: the job was cancelled or lost its lease; stop now."""


class InvalidInput(ValueError):
    """The input cannot be processed (not a decodable video, too short...): not retryable."""


class Unavailable(RuntimeError):
    """This box lacks what the job needs (a package, a model, a GPU): not retryable."""


class OutOfMemory(RuntimeError):
    """The accelerator ran out of memory: retryable (maybe with less work at once)."""


@dataclass
class Reporter:
    """Callbacks a pipeline reports through; each may raise Cancelled.

    `stage(name, event)` with event `started` or `done`; `progress(name, fraction)` with
    fraction in [0, 1] within the stage.
    """

    on_stage: Callable[[str, str, Json], None] = field(default=lambda stage, event, info: None)
    on_progress: Callable[[str, float], None] = field(default=lambda stage, fraction: None)

    def stage(self, name: str, event: str, info: Json | None = None) -> None:
        """A stage started or finished."""
        self.on_stage(name, event, info or {})

    def progress(self, name: str, fraction: float) -> None:
        """How far the current stage is (0..1)."""
        self.on_progress(name, min(1.0, max(0.0, fraction)))


class Stages:
    """Resumable stages in one work dir."""

    def __init__(self, work_dir: Path, reporter: Reporter | None = None) -> None:
        self.work_dir = work_dir
        self.reporter = reporter or Reporter()
        work_dir.mkdir(parents=True, exist_ok=True)

    def dir(self, stage: str) -> Path:
        """The folder a stage writes into."""
        return self.work_dir / stage

    def done(self, stage: str) -> Json | None:
        """The summary a finished stage left, or None if it has not finished."""
        marker = self.work_dir / f"{stage}.done"
        try:
            data: Json = json.loads(marker.read_text())
        except FileNotFoundError:
            return None
        return data

    def run(self, stage: str, fn: Callable[[Path], Json]) -> Json:
        """Run `fn(stage_dir)` unless the stage already finished; return its summary.

        A half-written stage dir from a crash is cleared first, so `fn` starts clean.
        """
        found = self.done(stage)
        if found is not None:
            return found
        folder = self.dir(stage)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        self.reporter.stage(stage, "started")
        summary = fn(folder)
        sync_tree(folder)
        with atomic_write(self.work_dir / f"{stage}.done", "w") as fh:
            json.dump(summary, fh)
        fsync_dir(self.work_dir)
        self.reporter.stage(stage, "done", summary)
        return summary
