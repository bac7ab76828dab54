"""`fieldbox up`: prints where the API is, hands out the first admin token once, stops on Ctrl-C."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

_UP = [sys.executable, "-m", "appliance", "up"]
TOKEN = re.compile(r"\bfbx_[0-9a-f]+_[A-Za-z0-9_-]+")


class Up:
    """A running `python -m appliance up` and the lines it has printed."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "FIELDBOX_CONFIG"}
        env["FIELDBOX_DATA"] = str(data_dir)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [*_UP, "--api-port", str(self.port), "--host", "127.0.0.1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._queue.put(raw.decode(errors="replace"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """The first printed line containing `pattern`; fails after `timeout` seconds."""
        for line in self.lines:
            if pattern in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got is None:
                break
            self.lines.append(got)
            if pattern in got:
                return got
        raise AssertionError(f"{pattern!r} never printed; output:\n{''.join(self.lines)[-3000:]}")

    def drain(self, timeout: float = 5) -> None:
        """Collect what is left of the output once the process has ended."""
        self._reader.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.lines.append(line)

    def api_pid(self) -> int:
        """The pid of the api child, as its /metrics reports it."""
        return int(httpx.get(self.url + "/metrics", timeout=5).headers["x-pid"])

    def kill(self) -> None:
        """Last-resort cleanup: SIGKILL the whole group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" in status.read_text()
    except OSError:
        return True


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh data root for `up`."""
    return tmp_path / "data"


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    """Every `up` a test starts, killed at the end if it is still running."""
    started: list[Up] = []
    yield started
    for up in started:
        up.kill()


def _stop(up: Up, whole_group: bool) -> None:
    """Ctrl-C (SIGINT), then expect exit 0 within 20 s and the api child gone."""
    child = up.api_pid()
    if whole_group:
        os.killpg(up.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        os.kill(up.proc.pid, signal.SIGINT)
    try:
        code = up.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        up.drain(0)
        raise AssertionError("up did not stop within 20 s of SIGINT") from None
    up.drain()
    assert code == 0, "".join(up.lines)[-3000:]
    for _ in range(100):
        if _gone(child):
            break
        time.sleep(0.05)
    assert _gone(child), f"api child {child} outlived `up`"
    with pytest.raises(httpx.TransportError):
        httpx.get(up.url + "/health", timeout=2)


def test_up_prints_url_and_first_token_then_stops(data_dir: Path, ups: list[Up]) -> None:
    """First `up` prints the URL and a working admin token; Ctrl-C stops the tree with 0."""
    up = Up(data_dir)
    ups.append(up)
    line = up.wait_for("fieldbox is up")
    assert up.url in line
    token_line = up.wait_for("admin token", timeout=10)
    found = TOKEN.search(token_line)
    assert found is not None, token_line
    token = found.group(0)
    r = httpx.get(up.url + "/v1/locations", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"items": []}
    bad = httpx.get(up.url + "/v1/locations", headers={"Authorization": "Bearer fbx_0_nope"})
    assert bad.status_code == 401
    _stop(up, whole_group=True)

    again = Up(data_dir)
    ups.append(again)
    again.wait_for("fieldbox is up")
    r = httpx.get(again.url + "/v1/locations", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, "the first token stopped working after a restart"
    _stop(again, whole_group=False)
    printed = "".join(again.lines)
    assert "admin token" not in printed
    assert not TOKEN.search(printed), "a second `up` printed another token"
