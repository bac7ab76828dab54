"""The bridge tests share the root conftest's `moto_server` and `bucket` fixtures; here, a
second real S3 server (SeaweedFS) and `s3_bucket`, a fresh bucket on each server in turn."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.bridge.faultproxy import FaultProxy
from tests.bridge.s3server import Bucket, S3Server, s3_env
from tests.bridge.seaweed import SeaweedServer
from tests.bridge.uploadbox import proxy_for

pytest.importorskip("moto")

SERVERS = ("moto", "seaweedfs")


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A SeaweedFS process (`weed mini`) shared by the session's tests."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture(params=SERVERS)
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each real S3 server in turn (started on first use, once per session)."""
    fixture = "moto_server" if request.param == "moto" else "seaweed_server"
    server: S3Server = request.getfixturevalue(fixture)
    return server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new empty bucket on `s3_server`; the AWS credential variables hold its keys."""
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    name = f"t-{secrets.token_hex(6)}"
    client: object = s3_server.client()
    client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return Bucket(s3_server, name, client)


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A fault proxy in front of `s3_server`."""
    yield from proxy_for(s3_server)
