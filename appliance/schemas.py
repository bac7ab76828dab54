"""Request and response bodies of the field API (msgspec Structs)."""

from __future__ import annotations

from typing import Any

import msgspec

from store.assets import Asset
from store.locations import Location
from store.queue import Job


class LocationIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /v1/locations`."""

    id: str
    account: str
    geo_prefix: str
    name: str


class LocationList(msgspec.Struct, kw_only=True):
    """Every location on the box."""

    items: list[Location]


class DocumentMeta(msgspec.Struct, kw_only=True):
    """One document in a listing: its key, ETag and body."""

    key: str
    etag: str
    updated_at: float
    body: msgspec.Raw


class DocumentPage(msgspec.Struct, kw_only=True):
    """A page of a collection, in key order."""

    items: list[DocumentMeta]
    next_cursor: str | None


class AssetOut(Asset, frozen=True, kw_only=True):
    """An asset as clients see it: the stored record plus where to download it."""

    content_url: str

    @classmethod
    def of(cls, asset: Asset) -> AssetOut:
        """Public view of a stored asset."""
        return cls(**msgspec.structs.asdict(asset), content_url=f"/v1/assets/{asset.id}/content")


class AssetPage(msgspec.Struct, kw_only=True):
    """A page of assets, newest first."""

    items: list[AssetOut]
    next_cursor: str | None


class Health(msgspec.Struct, kw_only=True):
    """Liveness answer."""

    ok: bool
    process: str
    version: str
    uptime_s: float
    bridge: dict[str, Any] | None = None
    """The bridge's last status (S3 target, backlog, Litestream lag, last drill); None
    when no bridge has run on this box."""


class Readiness(msgspec.Struct, kw_only=True):
    """Readiness answer: every check and its verdict."""

    ok: bool
    checks: dict[str, str]


class VersionInfo(msgspec.Struct, kw_only=True):
    """What is running."""

    name: str
    version: str
    python: str


class JobCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /v1/jobs`."""

    kind: str
    asset_id: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    idempotency_key: str | None = None
    priority: int = 0


class JobList(msgspec.Struct, kw_only=True):
    """Jobs, newest first."""

    items: list[Job]
    counts: dict[str, int]


class WorkerList(msgspec.Struct, kw_only=True):
    """What each worker process last said about itself."""

    items: list[dict[str, Any]]
