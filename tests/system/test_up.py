"""`fieldbox up`: prints where the API is, hands out the first admin token once, stops on Ctrl-C;
JSON lines off a terminal, readable lines and a banner on one."""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ROOT, free_port

_UP = [sys.executable, "-m", "appliance", "up"]
TOKEN = re.compile(r"\bfbx_[0-9a-f]+_[A-Za-z0-9_-]+")


class Up:
    """A running `python -m appliance up` and the lines it has printed."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.gateway_port = free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        env = {k: v for k, v in os.environ.items() if k != "FIELDBOX_CONFIG"}
        env["FIELDBOX_DATA"] = str(data_dir)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [
                *_UP,
                "--api-port",
                str(self.port),
                "--gateway-port",
                str(self.gateway_port),
                "--host",
                "127.0.0.1",
            ],
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

    def banner(self, timeout: float = 90) -> dict[str, Any]:
        """The `fieldbox_up` event (off a terminal, the banner is one JSON event)."""
        event: dict[str, Any] = json.loads(self.wait_for('"fieldbox_up"', timeout))
        return event

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

    def child_pid(self, process: str) -> int:
        """The pid of the `fieldbox serve {process}` child, found through /proc."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid and b"serve" in argv and process.encode() in argv:
                return int(stat.parent.name)
        raise AssertionError(f"`up` has no {process} child")

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
    """Ctrl-C (SIGINT), then expect exit 0 within 20 s and both children gone."""
    child = up.api_pid()
    gateway = up.child_pid("gateway")
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
    for _ in range(100):
        if _gone(gateway):
            break
        time.sleep(0.05)
    assert _gone(gateway), f"gateway child {gateway} outlived `up`"
    with pytest.raises(httpx.TransportError):
        httpx.get(up.url + "/health", timeout=2)
    with pytest.raises(httpx.TransportError):
        httpx.get(up.gateway_url + "/health", timeout=2)


def test_up_prints_url_and_first_token_then_stops(data_dir: Path, ups: list[Up]) -> None:
    """First `up` prints the URLs and a working admin token, in one JSON event (stdout is a
    pipe here: every line is JSON); Ctrl-C stops the tree with 0; a second `up` prints no
    token."""
    up = Up(data_dir)
    ups.append(up)
    banner = up.banner()
    assert banner["api"] == up.url
    assert banner["admin"] == up.url + "/admin"
    assert banner["gateway"] == up.gateway_url + "/v1"
    assert banner["data"] == str(data_dir)
    token = banner["admin_token"]
    assert TOKEN.fullmatch(token), token
    r = httpx.get(up.url + "/v1/locations", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"items": []}
    bad = httpx.get(up.url + "/v1/locations", headers={"Authorization": "Bearer fbx_0_nope"})
    assert bad.status_code == 401
    _stop(up, whole_group=True)
    for line in up.lines:
        assert isinstance(json.loads(line), dict), f"not a JSON event: {line!r}"
    assert token not in (data_dir / "logs" / "up.log").read_text(), "the token reached up.log"

    again = Up(data_dir)
    ups.append(again)
    assert "admin_token" not in again.banner()
    r = httpx.get(again.url + "/v1/locations", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, "the first token stopped working after a restart"
    _stop(again, whole_group=False)
    assert not TOKEN.search("".join(again.lines)), "a second `up` printed another token"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLOCK = re.compile(r"^\d\d:\d\d:\d\d (api|gateway|worker|bridge|up) +\S")


def test_up_on_a_terminal_prints_readable_lines_and_the_banner_after_every_child(
    tmp_path: Path,
) -> None:
    """Under a pseudo-terminal: no JSON line, each child's lines with its prefix, and the
    banner, with the admin page's address, in one piece after every child said it runs."""
    port, gw_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("FIELDBOX_CONFIG", "NO_COLOR")}
    env.update(FIELDBOX_DATA=str(tmp_path / "data"), TERM="xterm")
    argv = [*_UP, "--api-port", str(port), "--gateway-port", str(gw_port)]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    out = b""
    try:
        deadline = time.monotonic() + 120
        while b"Ctrl-C stops every process." not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                out += os.read(leader, 65536)
        text = _ANSI.sub("", out.decode(errors="replace")).replace("\r\n", "\n")
        assert "Ctrl-C stops every process." in text, text[-3000:]
        assert "\x1b[" in out.decode(errors="replace"), "no colour on a terminal"
        before, _, banner = text.partition("fieldbox is up")
        lines = [line for line in before.splitlines() if line.strip()]
        assert lines, text
        for line in lines:
            assert not line.lstrip().startswith("{"), f"a JSON line on a terminal: {line!r}"
            assert _CLOCK.match(line), f"not one readable event: {line!r}"
        assert "Adding job tentatively" not in before
        assert "Started server process" not in before
        for started in ("bridge_started", "worker_started"):
            assert started in before, f"{started} came after the banner:\n{text}"
        rows = banner.split("Ctrl-C stops every process.")[0].splitlines()[1:]
        assert [row.split()[0] for row in rows if row.strip()][:5] == [
            "field",
            "admin",
            "API",
            "gateway",
            "data",
        ], banner
        assert f"http://127.0.0.1:{port}/admin" in banner
        assert TOKEN.search(banner), banner
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        os.close(leader)
    assert code == 0


def test_up_answers_a_chat_through_the_gateway(data_dir: Path, ups: list[Up]) -> None:
    """`up` prints the gateway's URL; the admin token it prints gets a chat completion from
    the embedded model through the official openai client; Ctrl-C stops the gateway too."""
    up = Up(data_dir)
    ups.append(up)
    banner = up.banner()
    assert banner["gateway"] == f"{up.gateway_url}/v1"
    client = openai.OpenAI(base_url=banner["gateway"], api_key=banner["admin_token"], max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert ids == ["embeddings-default", "smollm2-135m", "multilingual-e5-small"]
    reply = client.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content and reply.choices[0].message.content.strip()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{up.gateway_url}/v1", api_key="fbx_0_nope", max_retries=0
        ).models.list()
    _stop(up, whole_group=True)
