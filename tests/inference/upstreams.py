"""Helpers of the gateway tests: a fake-upstream process, gateway processes with a key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, Server, free_port, make_config, make_token

Json = dict[str, Any]


class FakeUpstream:
    """A `python -m tests.inference.fake_upstream` process; one per module is enough."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"fake-upstream-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> FakeUpstream:
        """Start and wait until it answers."""
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.inference.fake_upstream", "--port", str(self.port)],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake upstream exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.root + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("fake upstream did not start")

    def stop(self) -> None:
        """Terminate it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log.close()

    def base(self, name: str) -> str:
        """The root of the upstream called `name` (Ollama's `url`; vLLM's without `/v1`)."""
        return f"{self.root}/u/{name}"

    def v1(self, name: str) -> str:
        """The OpenAI-style `url` of the upstream called `name`."""
        return f"{self.root}/u/{name}/v1"

    def control(self, name: str, **settings: Any) -> Json:
        """Change how `name` behaves (mode, delay_s, healthy, release, reset, ...)."""
        resp = httpx.post(f"{self.base(name)}/_control", json=settings, timeout=10)
        resp.raise_for_status()
        result: Json = resp.json()
        return result

    def received(self, name: str) -> Json:
        """`{"count", "requests": [{"path", "body"}], "probes": [path...]}` of `name`."""
        resp = httpx.get(f"{self.base(name)}/_requests", timeout=10)
        resp.raise_for_status()
        result: Json = resp.json()
        return result

    def last(self, name: str) -> Json:
        """The last model call `name` received: `{"path", "body"}`."""
        requests: list[Json] = self.received(name)["requests"]
        assert requests, f"upstream {name!r} received no model call"
        return requests[-1]

    def count(self, name: str) -> int:
        """How many model calls `name` received."""
        return int(self.received(name)["count"])


@dataclass
class Gateway:
    """A running `fieldbox serve gateway` and a key with the gateway scope."""

    server: Server
    token: str

    @property
    def url(self) -> str:
        """`http://127.0.0.1:port`."""
        return self.server.url

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header with the key."""
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, timeout: float = 30) -> httpx.Client:
        """An httpx client with the key set."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def backends(self) -> dict[str, Json]:
        """`/v1/backends` by backend name."""
        resp = httpx.get(self.url + "/v1/backends", headers=self.headers, timeout=10)
        resp.raise_for_status()
        return {b["name"]: b for b in resp.json()["backends"]}

    def log(self) -> str:
        """What the gateway process wrote so far."""
        return self.server.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the process."""
        self.server.stop()


def start_gateway(
    data_dir: Path, toml: str, env: dict[str, str] | None = None, timeout: float = 60
) -> Gateway:
    """Write `toml` beside `data_dir`, start a gateway on it and make it a gateway key."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir.parent / f"{data_dir.name}.toml"
    config_path.write_text(toml)
    token = make_token(make_config(data_dir), ("gateway",))
    server = Server(data_dir, config_path, process="gateway")
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        server.start(timeout)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Gateway(server, token)


@contextmanager
def running(gateway: Gateway) -> Iterator[Gateway]:
    """Stop the gateway when the block ends."""
    try:
        yield gateway
    finally:
        gateway.server.stop()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll `predicate` until true; fail naming `what` after `timeout` seconds (not a timing
    assertion: only a guard against hanging)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def remote_backend(
    kind: str, name: str, url: str, models: list[str], **extra: str | int | float
) -> str:
    """One `[[inference.backends]]` table."""
    lines = [
        "[[inference.backends]]",
        f'name = "{name}"',
        f'type = "{kind}"',
        f'url = "{url}"',
        "models = [" + ", ".join(f'"{m}"' for m in models) + "]",
    ]
    for key, value in extra.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"
