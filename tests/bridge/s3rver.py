"""An S3 server that lacks what the bridge needs, for the tests of the server check: s3rver.

s3rver (npm, `s3rver@3.7.1`) is a small S3 API in Node that stores objects as files. It
ignores `If-None-Match: *` (a second PUT overwrites), keeps no CRC64NVME (HeadObject
reports none) and does not implement ListMultipartUploads: a real server the bridge must
refuse to upload to. Installed from the npm registry into `.testdata/s3rver/` on first use
(Node and npm are on every machine the project runs on; `make install` puts npm there).
It accepts only its own account's keys, S3RVER / S3RVER.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.bridge.s3server import REGION, _free_port
from tests.conftest import ROOT

VERSION = "3.7.1"
KEY = "S3RVER"  # the access key and the secret of s3rver's built-in account
START_S = 60.0
HOME = ROOT / ".testdata" / "s3rver"


def install() -> Path:
    """The s3rver executable, installed from the npm registry when it is not there yet."""
    binary = HOME / "node_modules" / ".bin" / "s3rver"
    stamp = HOME / f".installed-{VERSION}"
    if binary.exists() and stamp.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: `make install` installs it (Debian's npm)")
    HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--prefix", str(HOME), "--no-save", "--no-package-lock", "--no-audit",
         "--no-fund", "--ignore-scripts", "--silent", f"s3rver@{VERSION}"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    stamp.touch()
    return binary


class S3rver:
    """`s3rver` on 127.0.0.1 on a free port, its objects in a temp dir."""

    name = "s3rver"

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = _free_port()
        self.log_path = work_dir / "s3rver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The endpoint URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3rver:
        """Install if needed, start, and wait until ListBuckets answers."""
        binary = install()
        data = self.work_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        argv = [str(binary), "-d", str(data), "-a", "127.0.0.1", "-p", str(self.port),
                "--no-vhost-buckets"]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client: Any = self.client()
        deadline = time.monotonic() + START_S
        while True:
            try:
                client.list_buckets()
                return self
            except Exception as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = self.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"s3rver did not start ({exc}): {tail}") from exc
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self, endpoint: str | None = None) -> object:
        """A plain boto3 S3 client with s3rver's keys."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=endpoint or self.url, aws_access_key_id=KEY,
            aws_secret_access_key=KEY, region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )  # fmt: skip
