"""A real S3 API for the tests: moto in server mode, as its own process on a free port.

Objects live in the server's memory, so a stopped server forgets them: tests that stop S3
for a while restart it on the same port and recreate their bucket.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server(Protocol):
    """What the tests need of a real S3 server process (moto's, or SeaweedFS's)."""

    name: str
    port: int

    @property
    def url(self) -> str:
        """The endpoint URL clients use."""

    def client(self, endpoint: str | None = None) -> object:
        """A plain boto3 S3 client for checking what arrived."""


class MotoServer:
    """`python -m moto.server` on 127.0.0.1, started and stopped by the tests."""

    name = "moto"

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.log_path = log_dir / f"moto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The endpoint URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        """Start the server and wait until it answers."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return self
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_path.read_text()[-2000:]
                    raise RuntimeError(f"moto did not start: {tail}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (its objects are gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self, endpoint: str | None = None) -> object:
        """A plain boto3 S3 client for checking what arrived (not the code under test)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )


def s3_toml(endpoint: str, bucket: str, prefix: str = "fieldbox", box_id: str = "box1") -> str:
    """The `[bridge.s3]` config section pointing at a test server (path-style addressing)."""
    return (
        "[bridge.s3]\n"
        f'bucket = "{bucket}"\n'
        f'endpoint_url = "{endpoint}"\n'
        f'region = "{REGION}"\n'
        f'prefix = "{prefix}"\n'
        f'box_id = "{box_id}"\n'
        'addressing_style = "path"\n'
    )


def s3_env() -> dict[str, str]:
    """Environment variables with the test credentials (the standard AWS names)."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@dataclass
class Bucket:
    """A fresh bucket on the session's server, and a boto3 client to look into it."""

    server: S3Server
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
