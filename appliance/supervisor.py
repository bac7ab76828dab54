"""`fieldbox up`: every process in one tree, restarted if it dies, stopped in reverse order."""

from __future__ import annotations

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

from appliance.config import FieldboxConfig
from store import keys
from store.paths import Layout

_RESTART_DELAY_S = 1.0


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    health_url: str | None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        """Start (or restart) the process."""
        self.proc = subprocess.Popen(self.argv, env=env)
        self.started_at = time.time()

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
    for child in children:
        child.start(env)
    if all(_wait_healthy(c.health_url, 60, stop) for c in children if c.health_url):
        url = f"http://{_client_host(host)}:{port}"
        print(f"fieldbox is up: field API {url}  (API docs {url}/schema)", flush=True)
        print(f"model gateway: http://{_client_host(host)}:{gw_port}/v1", flush=True)
        print(f"data: {cfg.data_dir}", flush=True)
        if token:
            print(f"admin token (shown once, keep it): {token}", flush=True)
    while not stop.is_set():
        for child in children:
            if child.proc is not None and child.proc.poll() is not None and not stop.is_set():
                code = child.proc.returncode
                print(f"{child.name} exited with {code}; restarting", file=sys.stderr, flush=True)
                stop.wait(_RESTART_DELAY_S)
                child.restarts += 1
                child.start(env)
        stop.wait(0.5)
    for child in reversed(children):
        child.stop(timeout=15)
    return 0


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
