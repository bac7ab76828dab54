"""`fieldbox up`: every process in one tree, restarted if it dies, stopped in reverse order.

For the admin page, `up` also leaves `{data}/up/status.json` (each child's pid, restarts and
health URL, rewritten every couple of seconds) and tees every child's output, as it passes
it on to its own stdout, into `{data}/logs/up.log` (one JSON event a line, rotated at 8 MiB).
Each child logs JSON and tells `up` it is ready over the sd_notify protocol (a socket of
its own in `$NOTIFY_SOCKET`, as systemd would give it); once every child is, `up` prints its
banner (appliance.console renders the lines for a terminal).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from appliance.config import FieldboxConfig
from appliance.console import Console, LogFormat, colour_wanted, human_output
from store import keys
from store.db import read_json, replace_file
from store.paths import Layout

_RESTART_DELAY_S = 1.0
_READY_TIMEOUT_S = 90.0
_SETTLE_S = 0.3  # the banner waits for this much quiet, so it is not lost among late lines
_SETTLE_MAX_S = 2.0
_STATUS_EVERY_S = 2.0
_STATUS_STALE_S = 10.0
LOG_ROTATE_BYTES = 8 * 1024 * 1024


def read_up_status(layout: Layout) -> dict[str, Any] | None:
    """What a running `fieldbox up` last wrote, or None when none runs (or it went stale)."""
    data = read_json(layout.up_status)
    if data is None:
        return None
    if time.time() - float(data.get("updated_at", 0)) > _STATUS_STALE_S:
        return None
    return data


class LogTee:
    """Appends whole lines to `up.log`, from every child's pump thread, rotating it once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._fh: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed in close()

    def write(self, line: bytes) -> None:
        """Append one line (best effort: a full disk must not stop the box's output)."""
        with self._lock:
            try:
                self._fh.write(line)
                self._fh.flush()
                if self._fh.tell() > LOG_ROTATE_BYTES:
                    self._fh.close()
                    os.replace(self.path, self.path.with_suffix(".log.1"))
                    self._fh = open(self.path, "ab")  # noqa: SIM115
            except (OSError, ValueError):  # ValueError: a line that arrives after close()
                pass

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._fh.close()


def _pump(name: str, stream: IO[bytes], console: Console, tee: LogTee | None) -> None:
    for line in stream:
        console.child_line(name, line, time.monotonic())
        if tee is not None:
            tee.write(line)


class Readiness:
    """One sd_notify socket per child, read by one thread: which children said READY=1."""

    def __init__(self, names: list[str]) -> None:
        # A short path of its own: AF_UNIX paths are capped near 100 bytes, and a data
        # directory can be deeper than that.
        self.dir = Path(tempfile.mkdtemp(prefix="fieldbox-up-"))
        self.ready = {name: threading.Event() for name in names}
        self._selector = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        for name in names:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(self.address(name)))
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, name)
            self._socks.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def address(self, name: str) -> Path:
        """The `NOTIFY_SOCKET` of child `name`."""
        return self.dir / f"{name}.sock"

    def _read(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                with contextlib.suppress(OSError):
                    data = key.fileobj.recv(4096)  # type: ignore[union-attr]
                    if b"READY=1" in data.split(b"\n"):
                        self.ready[key.data].set()

    def close(self) -> None:
        """Stop reading and remove the sockets."""
        self._stop.set()
        self._thread.join(2)
        for sock in self._socks:
            sock.close()
        self._selector.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    health_url: str | None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str], console: Console, tee: LogTee | None = None) -> None:
        """Start (or restart) the process; its output goes to ours and to the tee."""
        self.proc = subprocess.Popen(
            self.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        threading.Thread(
            target=_pump, args=(self.name, self.proc.stdout, console, tee), daemon=True
        ).start()
        self.started_at = time.time()

    def describe(self) -> dict[str, Any]:
        """This child for `up/status.json`."""
        running = self.proc is not None and self.proc.poll() is None
        return {
            "name": self.name,
            "pid": self.proc.pid if self.proc is not None else None,
            "running": running,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "health_url": self.health_url,
        }

    def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _write_up_status(layout: Layout, started_at: float, children: list[Child]) -> None:
    path = layout.up_status
    body = {
        "pid": os.getpid(),
        "started_at": started_at,
        "updated_at": time.time(),
        "children": [c.describe() for c in children],
    }
    # On failure the admin page says "not under fieldbox up"; the box runs on.
    with contextlib.suppress(OSError):
        replace_file(path, json.dumps(body))


def _wait_healthy(url: str, timeout: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        stop.wait(0.2)
    return False


def first_admin_token(cfg: FieldboxConfig) -> str | None:
    """Create an admin key if the box has none yet; return its token (shown only now)."""
    layout = Layout(cfg.data_dir)
    layout.ensure()
    db = keys.open_keys(str(layout.keys_db), cfg.store)
    try:
        if any("admin" in k.scopes and k.revoked_at is None for k in keys.list_all(db)):
            return None
        return keys.create(db, "first admin (fieldbox up)", ("admin",))[1]
    finally:
        db.close()


def run_up(
    cfg: FieldboxConfig,
    config_path: Path | None,
    *,
    host: str,
    api_port: int | None,
    gateway_port: int | None = None,
    log_format: LogFormat = "auto",
) -> int:
    """Run the process tree until SIGINT/SIGTERM; return the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()  # only a flag: the loop below does the work

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    human = human_output(log_format, sys.stdout, os.environ)
    console = Console(sys.stdout.buffer, human, colour_wanted(human, sys.stdout, os.environ))
    base = [sys.executable, "-m", "appliance"]
    if config_path is not None:
        base += ["--config", str(config_path)]
    serve = [*base, "serve", "--log-format", "json"]  # up renders them; up.log keeps JSON
    port = api_port or cfg.api.port
    gw_port = gateway_port or cfg.gateway.port
    client = _client_host(host)
    children = [
        Child(
            "api",
            [*serve, "api", "--host", host, "--port", str(port)],
            f"http://{client}:{port}/health",
        ),
        Child(
            "gateway",
            [*serve, "gateway", "--host", host, "--port", str(gw_port)],
            f"http://{client}:{gw_port}/health",
        ),
        Child("worker", [*serve, "worker"], None),
        Child("bridge", [*serve, "bridge"], None),
    ]
    token = first_admin_token(cfg)
    layout = Layout(cfg.data_dir)
    tee = LogTee(layout.up_log)
    readiness = Readiness([c.name for c in children])
    env = {**os.environ, "FIELDBOX_DATA": str(cfg.data_dir)}
    started_at = time.time()
    for child in children:
        child.start({**env, "NOTIFY_SOCKET": str(readiness.address(child.name))}, console, tee)
    _write_up_status(layout, started_at, children)
    if _wait_ready(children, readiness, stop, console):
        url = f"http://{client}:{port}"
        rows = [
            ("field API", "api", url),
            ("admin page", "admin", f"{url}/admin"),
            ("API docs", "docs", f"{url}/schema"),
            ("gateway", "gateway", f"http://{client}:{gw_port}/v1"),
            ("data", "data", str(cfg.data_dir)),
        ]
        console.banner(rows, token)
    last_status = time.monotonic()
    while not stop.is_set():
        for child in children:
            if child.proc is not None and child.proc.poll() is not None and not stop.is_set():
                code = child.proc.returncode
                console.note("child_restarting", "warning", child=child.name, exit_code=code)
                stop.wait(_RESTART_DELAY_S)
                child.restarts += 1
                readiness.ready[child.name].clear()
                notify = str(readiness.address(child.name))
                child.start({**env, "NOTIFY_SOCKET": notify}, console, tee)
                _write_up_status(layout, started_at, children)
        if time.monotonic() - last_status >= _STATUS_EVERY_S:
            _write_up_status(layout, started_at, children)
            last_status = time.monotonic()
        stop.wait(0.5)
    for child in reversed(children):
        child.stop(timeout=15)
    layout.up_status.unlink(missing_ok=True)
    readiness.close()
    tee.close()
    return 0


def _wait_ready(
    children: list[Child], readiness: Readiness, stop: threading.Event, console: Console
) -> bool:
    """Until every child said READY=1 and answers its health URL, then a moment of quiet.

    False when `up` was stopped first. A child still not ready after the timeout is named
    in a warning, and the banner follows all the same.
    """
    deadline = time.monotonic() + _READY_TIMEOUT_S
    for child in children:
        while not readiness.ready[child.name].wait(0.2):
            if stop.is_set():
                return False
            if time.monotonic() > deadline:
                console.note("child_not_ready", "warning", child=child.name)
                break
        left = max(1.0, deadline - time.monotonic())
        if child.health_url and not _wait_healthy(child.health_url, left, stop):
            if stop.is_set():
                return False
            console.note("child_not_healthy", "warning", child=child.name, url=child.health_url)
    settle_until = time.monotonic() + _SETTLE_MAX_S
    while time.monotonic() - console.last_line_at < _SETTLE_S and time.monotonic() < settle_until:
        if stop.wait(0.05):
            return False
    return not stop.is_set()


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
