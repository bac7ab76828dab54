"""Fixtures for the bridge tests: one moto S3 server for the session, a fresh bucket per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.bridge.s3server import MotoServer

pytest.importorskip("moto")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server process shared by the session's tests."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@dataclass
class Bucket:
    """A fresh bucket on the session's server, and a boto3 client to look into it."""

    server: MotoServer
    name: str
    client: Any

    @property
    def endpoint(self) -> str:
        """The server's URL."""
        return self.server.url

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix`."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def multipart_uploads(self) -> list[dict[str, Any]]:
        """Multipart uploads started and neither completed nor aborted."""
        uploads: list[dict[str, Any]] = self.client.list_multipart_uploads(Bucket=self.name).get(
            "Uploads", []
        )
        return uploads


@pytest.fixture
def bucket(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new empty bucket; the AWS credential variables point at the test server's keys."""
    from tests.bridge.s3server import s3_env

    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)
    name = f"t-{secrets.token_hex(6)}"
    client = moto_server.client()
    client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return Bucket(moto_server, name, client)
