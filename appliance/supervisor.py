"""`fieldbox up`: every process in one tree, restarted if it dies, stopped in reverse order.

For the admin page, `up` also leaves `{data}/up/status.json` (each child's pid, restarts and
health URL, rewritten every couple of seconds) and tees every child's output, as it passes
it on to its own stdout, into `{data}/logs/up.log` (one JSON event a line, rotated at 8 MiB).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from appliance.config import FieldboxConfig
from store import keys
from store.db import read_json, replace_file
from store.paths import Layout

_RESTART_DELAY_S = 1.0
_STATUS_EVERY_S = 2.0
_STATUS_STALE_S = 10.0
LOG_ROTATE_BYTES = 8 * 1024 * 1024


def up_status_path(layout: Layout) -> Path:
    """Where `fieldbox up` says what it supervises."""
    return layout.root / "up" / "status.json"


def up_log_path(layout: Layout) -> Path:
    """The file `fieldbox up` tees its children's log lines into."""
    return layout.root / "logs" / "up.log"


def read_up_status(layout: Layout) -> dict[str, Any] | None:
    """What a running `fieldbox up` last wrote, or None when none runs (or it went stale)."""
    data = read_json(up_status_path(layout))
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


def _pump(stream: IO[bytes], tee: LogTee | None) -> None:
    out = sys.stdout.buffer
    for line in stream:
        try:
            out.write(line)
            out.flush()
        except (OSError, ValueError):
            pass
        if tee is not None:
            tee.write(line)


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    health_url: str | None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str], tee: LogTee | None = None) -> None:
        """Start (or restart) the process; its output goes to ours and to the tee."""
        self.proc = subprocess.Popen(
            self.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, tee), daemon=True).start()
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
    path = up_status_path(layout)
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
) -> int:
    """Run the process tree until SIGINT/SIGTERM; return the exit code."""
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()  # only a flag: the loop below does the work

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    env = {**os.environ, "FIELDBOX_DATA": str(cfg.data_dir)}
    base = [sys.executable, "-m", "appliance"]
    if config_path is not None:
        base += ["--config", str(config_path)]
    port = api_port or cfg.api.port
    gw_port = gateway_port or cfg.gateway.port
    children = [
        Child(
            "api",
            [*base, "serve", "api", "--host", host, "--port", str(port)],
            f"http://{_client_host(host)}:{port}/health",
        ),
        Child(
            "gateway",
            [*base, "serve", "gateway", "--host", host, "--port", str(gw_port)],
            f"http://{_client_host(host)}:{gw_port}/health",
        ),
        Child("worker", [*base, "serve", "worker"], None),
        Child("bridge", [*base, "serve", "bridge"], None),
    ]
    token = first_admin_token(cfg)
    layout = Layout(cfg.data_dir)
    tee = LogTee(up_log_path(layout))
    started_at = time.time()
    for child in children:
        child.start(env, tee)
    _write_up_status(layout, started_at, children)
    if all(_wait_healthy(c.health_url, 60, stop) for c in children if c.health_url):
        url = f"http://{_client_host(host)}:{port}"
        print(f"fieldbox is up: field API {url}  (API docs {url}/schema)", flush=True)
        print(f"model gateway: http://{_client_host(host)}:{gw_port}/v1", flush=True)
        print(f"data: {cfg.data_dir}", flush=True)
        if token:
            print(f"admin token (shown once, keep it): {token}", flush=True)
    last_status = time.monotonic()
    while not stop.is_set():
        for child in children:
            if child.proc is not None and child.proc.poll() is not None and not stop.is_set():
                code = child.proc.returncode
                print(f"{child.name} exited with {code}; restarting", file=sys.stderr, flush=True)
                stop.wait(_RESTART_DELAY_S)
                child.restarts += 1
                child.start(env, tee)
                _write_up_status(layout, started_at, children)
        if time.monotonic() - last_status >= _STATUS_EVERY_S:
            _write_up_status(layout, started_at, children)
            last_status = time.monotonic()
        stop.wait(0.5)
    for child in reversed(children):
        child.stop(timeout=15)
    up_status_path(layout).unlink(missing_ok=True)
    tee.close()
    return 0


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
