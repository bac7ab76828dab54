"""The worker runs at the niceness its config names: every thread of the real process, as
the kernel reports it in /proc, so a splat job yields the CPU to the api and the gateway."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.system.helpers import DaemonProc, write_config


def _thread_nices(pid: int) -> dict[int, int]:
    """Thread id -> niceness of every thread of `pid` (field 19 of /proc/…/task/…/stat)."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = int(fields[16])
    return out


def _started_worker(tmp_path: Path, toml: str) -> DaemonProc:
    data = tmp_path / "data"
    data.mkdir()
    worker = DaemonProc(data, write_config(tmp_path / "fieldbox.toml", toml))
    deadline = time.monotonic() + 60
    while b"worker_started" not in worker.log_path.read_bytes():
        assert worker.proc.poll() is None, worker.log_path.read_text()[-2000:]
        assert time.monotonic() < deadline, "the worker never said worker_started"
        time.sleep(0.05)
    return worker


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize(("toml", "want"), [("", 10), ("[worker]\nnice = 15\n", 15)])
def test_every_worker_thread_runs_at_the_configured_niceness(
    tmp_path: Path, toml: str, want: int
) -> None:
    """Default config: niceness 10; `nice = 15`: 15; on the main thread and on every slot
    and heartbeat thread the worker started (threads inherit their creator's niceness)."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert base < want, "the test process itself must run below the niceness under test"
    worker = _started_worker(tmp_path, toml)
    try:
        nices = _thread_nices(worker.proc.pid)
        assert len(nices) >= 2, nices  # the main loop and at least one slot thread
        assert set(nices.values()) == {want}, nices
        assert b'"worker_priority"' in worker.log_path.read_bytes()
    finally:
        assert worker.stop() == 0


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_nice_zero_leaves_the_inherited_niceness(tmp_path: Path) -> None:
    """`nice = 0` turns the fix off: the worker keeps the niceness it was started with."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    worker = _started_worker(tmp_path, "[worker]\nnice = 0\n")
    try:
        assert set(_thread_nices(worker.proc.pid).values()) == {base}
    finally:
        assert worker.stop() == 0
