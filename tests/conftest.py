"""Shared fixtures: a config on a temp data root, a key, an in-process client, a real server."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import FieldboxConfig, parse_config
from store import keys
from store.paths import Layout
from tests.bridge.s3server import Bucket, MotoServer, s3_env

ROOT = Path(__file__).resolve().parent.parent


def make_config(data_dir: Path, toml: str = "") -> FieldboxConfig:
    """A config whose data root is `data_dir`."""
    cfg = parse_config(toml)
    return msgspec.structs.replace(
        cfg, store=msgspec.structs.replace(cfg.store, data_dir=str(data_dir))
    )


def make_token(cfg: FieldboxConfig, scopes: tuple[str, ...] = ("field",)) -> str:
    """Create a key in the config's keys.db; return its token."""
    layout = Layout(cfg.data_dir)
    layout.ensure()
    db = keys.open_keys(str(layout.keys_db), cfg.store)
    try:
        return keys.create(db, "test", scopes)[1]
    finally:
        db.close()


@pytest.fixture
def cfg(tmp_path: Path) -> FieldboxConfig:
    """Default config on a fresh temp data root."""
    return make_config(tmp_path / "data")


@pytest.fixture
def token(cfg: FieldboxConfig) -> str:
    """A `field` token."""
    return make_token(cfg)


@pytest.fixture
def client(cfg: FieldboxConfig, token: str) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """In-process client with the token set."""
    with TestClient(app=create_app(cfg)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def free_port() -> int:
    """A TCP port nobody is listening on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real `fieldbox serve api` (or `serve gateway`) process on a free port."""

    def __init__(
        self, data_dir: Path, config_path: Path | None = None, process: str = "api"
    ) -> None:
        self.data_dir = data_dir
        self.config_path = config_path
        self.process = process
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{process}-{self.port}.log"

    def start(self, timeout: float = 60) -> Server:
        """Start and wait until /health answers."""
        env = {**os.environ, "FIELDBOX_DATA": str(self.data_dir)}
        argv = [sys.executable, "-m", "appliance"]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        argv += ["serve", self.process, "--host", "127.0.0.1", "--port", str(self.port)]
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.process} exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.process} did not become healthy")

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.log.close()

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()


@pytest.fixture
def server(cfg: FieldboxConfig) -> Iterator[Server]:
    """A real api process on the fixture's data root."""
    srv = Server(cfg.data_dir).start()
    try:
        yield srv
    finally:
        srv.stop()


# --- a real S3 API (moto's server) for the bridge and system tests -------------------


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server process shared by the session's tests."""
    pytest.importorskip("moto")
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new empty bucket; the AWS credential variables point at the test server's keys."""
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    name = f"t-{secrets.token_hex(6)}"
    s3 = moto_server.client()
    s3.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return Bucket(moto_server, name, s3)
