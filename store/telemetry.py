"""The telemetry spool: JSON lines under `telemetry/{yyyy-mm-dd}/{hh}-{seq}.jsonl`.

Each writer process appends to its own file (the `seq` part names the process and a
rotation counter), so no two processes interleave inside one file. Lines are written with
one `write()` each and flushed to the OS at once; they are fsynced when a file is closed and
every `fsync_interval_s`, which bounds what power loss can take. Telemetry is never
acknowledged to a client, so that window is not a broken promise. A later issue's bridge
ships finished files to S3 and prunes them.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()


class Spool:
    """An append-only writer of telemetry records for one process."""

    def __init__(
        self,
        root: Path,
        *,
        writer: str,
        max_file_bytes: int = 64 * 1024 * 1024,
        fsync_interval_s: float = 5.0,
    ) -> None:
        self.root = root
        self.writer = writer
        self.max_file_bytes = max_file_bytes
        self.fsync_interval_s = fsync_interval_s
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._hour: str = ""
        self._size = 0
        self._rotation = 0
        self._last_sync = time.monotonic()
        self._hour_ends = 0.0  # the wall-clock second the current hour's file is done

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line."""
        line = _encoder.encode(record) + b"\n"
        now = time.time()
        with self._lock:
            if now >= self._hour_ends:
                self._open(time.strftime("%Y-%m-%d/%H", time.gmtime(now)))
                self._hour_ends = (now // 3600 + 1) * 3600
            elif self._fd is None or self._size >= self.max_file_bytes:
                self._open(self._hour)
            assert self._fd is not None
            os.write(self._fd, line)
            self._size += len(line)
            if time.monotonic() - self._last_sync >= self.fsync_interval_s:
                os.fsync(self._fd)
                self._last_sync = time.monotonic()

    def _open(self, hour: str) -> None:
        self._close_locked()
        if hour != self._hour:
            self._rotation = 0
        self._hour = hour
        day, hh = hour.split("/")
        folder = self.root / day
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            path = folder / f"{hh}-{self.writer}.{self._rotation}.jsonl"
            self._rotation += 1
            try:
                # O_EXCL: a restarted process with the same writer name never appends to a
                # file an earlier run left half-written.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
            except FileExistsError:
                continue
            break
        self._fd, self._path, self._size = fd, path, 0

    def _close_locked(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    @property
    def current_path(self) -> Path | None:
        """The file being written now, if any."""
        return self._path

    def close(self) -> None:
        """Flush to disk and close the current file."""
        with self._lock:
            self._close_locked()


def read_all(root: Path) -> list[dict[str, Any]]:
    """Every record under `root`, oldest file first (for tests and the admin page)."""
    out: list[dict[str, Any]] = []
    for path in sorted(root.glob("*/*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                out.append(msgspec.json.decode(line))
    return out
