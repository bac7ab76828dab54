"""One api per data root: an flock on `{root}/api.lock`, held for the life of the process.

The kernel drops an flock when its holder dies, kill -9 included, so a restart after a
crash is never refused; the PID written into the file only names the holder in messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from store.errors import StoreError
from store.paths import Layout


class RootLocked(StoreError):
    """Another live process holds the data root's api lock."""

    def __init__(self, root: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"another fieldbox api ({holder}) is already serving the data root {root}; "
            "stop it first, or give this one its own data root ($FIELDBOX_DATA)"
        )
        self.root = root
        self.pid = pid


def _holder(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def hold_api_lock(root: Path) -> int:
    """Take the data root's api lock for this process; return its fd (keep it open).

    Raises RootLocked, naming the holder's PID, while another process holds it.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = Layout(root).api_lock
    # O_CLOEXEC (Python's default): a child the api starts must not inherit the lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RootLocked(root, _holder(path)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_api_lock(fd: int) -> None:
    """Let go of the lock (a clean exit; a killed process lets go by itself)."""
    os.close(fd)
