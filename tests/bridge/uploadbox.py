"""A box for the uploader tests: a data root with a location, its stores, and a config that
points the bridge at a test S3 server; plus blob contents and checksums to compare with."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awscrt import checksums  # type: ignore[import-untyped]

from appliance.config import FieldboxConfig
from bridge import s3
from bridge.throttle import Throttle
from bridge.uploader import PassResult, Uploader
from store.assets import Asset
from store.ingest import add_file
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from tests.bridge.faultproxy import FaultProxy
from tests.bridge.s3server import Bucket, S3Server, s3_toml
from tests.conftest import make_config

MIB = 1024 * 1024
UPLOAD = (
    "connect_timeout_s = 1.0\n"  # still inside [bridge.s3]: dead links fail fast
    "read_timeout_s = 2.0\n"
    "[bridge.upload]\n"
    f"multipart_threshold_bytes = {5 * MIB}\n"
    f"part_size_bytes = {5 * MIB}\n"
    "concurrency = 4\n"
    "retry_base_s = 0.2\n"
    "retry_max_s = 1.0\n"
    "poll_s = 0.2\n"
)


@dataclass
class Box:
    """One data root with a location, its stores, and the config pointing at S3."""

    cfg: FieldboxConfig
    layout: Layout
    locs: Locations
    outbox: Outbox
    files: Path

    def add(self, data: bytes, name: str = "f.bin") -> Asset:
        """A new asset with these bytes (as a job's result would be stored)."""
        src = self.files / f"{len(list(self.files.iterdir()))}-{name}"
        src.write_bytes(data)
        return add_file(
            self.layout, self.locs, self.outbox, "site1", src,
            kind="capture", filename=name, mime_type="application/octet-stream",
        )  # fmt: skip

    def uploader(self, rate: int = 0) -> Uploader:
        """An uploader for this box with a throttle at `rate` bytes/s."""
        return Uploader(self.cfg.bridge, self.layout, self.locs, self.outbox, Throttle(rate))

    def drain(self, up: Uploader | None = None) -> PassResult:
        """One `drain_once` pass, run to the end."""
        return asyncio.run((up or self.uploader()).drain_once())

    def key(self, sha256: str) -> str:
        """The blob key of a digest in this box's location."""
        return s3.blob_key(self.cfg.bridge.s3, "acme", "eu", "site1", sha256)


def make_box(
    tmp_path: Path, endpoint: str, bucket: str, extra: str = "", read_timeout_s: float = 2.0
) -> Box:
    """A box whose `[bridge]` config points at `endpoint`/`bucket` (empty bucket: no remote).

    `read_timeout_s` is short by default, so that dead links fail fast."""
    upload = UPLOAD.replace("read_timeout_s = 2.0", f"read_timeout_s = {read_timeout_s}")
    toml = (s3_toml(endpoint, bucket) + upload if bucket else "") + extra
    cfg = make_config(tmp_path / "data", toml)
    layout = Layout(cfg.data_dir)
    layout.ensure()
    locs = Locations(layout, cfg.store)
    if "site1" not in {loc.id for loc in locs.list()}:
        locs.create(Location(id="site1", account="acme", geo_prefix="eu", name="Site 1"))
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    return Box(cfg, layout, locs, Outbox(str(layout.outbox_db), cfg.store), files)


def crc(data: bytes) -> str:
    """CRC64NVME as S3 writes it."""
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


def blob_bytes(size: int, seed: int) -> bytes:
    """`size` bytes, the same for the same seed, different across seeds (cheap to make)."""
    block = random.Random(seed).randbytes(64 * 1024 + 17)
    return (block * (size // len(block) + 1))[:size]


def proxy_for(server: S3Server) -> Iterator[FaultProxy]:
    """A fault proxy in front of one of the session's S3 servers, stopped afterwards."""
    p = FaultProxy("127.0.0.1", server.port).start()
    yield p
    p.stop()


def get(bucket: Bucket, key: str) -> tuple[bytes, dict[str, Any]]:
    """An object's bytes and its HEAD (with checksums)."""
    body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    head = bucket.client.head_object(Bucket=bucket.name, Key=key, ChecksumMode="ENABLED")
    return body, head
