"""Files that are whole or absent: the one atomic-write helper every perception stage uses.

A stage's outputs are read by the next stage, by a retried job that resumes, and by the
worker that publishes them. A crash (power cut, kill -9, the disk filling up) in the middle
of a write must leave either the old file or the new one, never half of the new one. So a
file is written to a temp name beside it, fsynced, and renamed over the final name
(`os.replace` is atomic within one filesystem, and the temp file is in the same folder).

`sync_tree` and `fsync_dir` make a finished stage folder durable before its `.done` marker
is written (`perception.progress.Stages`): the marker must never outlive its outputs.

perception imports nothing of ours (see DESIGN.md), so this lives here, not in `store`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal


def temp_path(path: Path) -> Path:
    """The temp name `path` is written under before the rename: hidden, in the same folder."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def atomic_write(path: Path, mode: Literal["w", "wb"] = "wb") -> Iterator[IO[Any]]:
    """A file to write `path` through: whole on a clean exit; on an exception, `path` as it was."""
    tmp = temp_path(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A failed write leaves nothing behind: a later retry starts from the old file.
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, doc: Any) -> None:
    """Write `doc` as compact JSON to `path` atomically (NaN refused: JSON has none)."""
    with atomic_write(path, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"), allow_nan=False)


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so the names created or renamed in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (itself included)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        fsync_dir(sub)


__all__ = ["atomic_write", "fsync_dir", "sync_tree", "temp_path", "write_json"]
