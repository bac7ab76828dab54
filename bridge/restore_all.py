"""`fieldbox restore --all`: a replaced box gets its databases back from S3.

The replicas are found by listing the bucket one folder level at a time (`Delimiter="/"`),
so the blobs beside them are never listed: `{prefix}/{account}/{geo_prefix}/{location}/db/`
for each location (whichever box wrote it), and `{prefix}/{box_id}/db/queue` and `.../outbox`
for this box's own queue and outbox. Each database is then restored as `fieldbox restore
--location` restores one: into a temporary file, checked, renamed into place. The
filesystem is the location registry, so a restored location DB is a location again.

What it does not bring back: blobs (they stay in S3; the assets' rows are restored and
their downloads answer 404 until the bytes are on the box again), API keys (`keys.db` is
not replicated: issue new ones), and uploads that were still in progress.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from bridge import s3
from bridge.config import BridgeConfig
from bridge.litestream import Target
from bridge.restore import Restored, RestoreError, restore_target
from bridge.transfer import readable
from store.errors import InvalidName
from store.paths import Layout, check_id

_BOX_DBS = ("queue", "outbox")


@dataclass
class Outcome:
    """What happened to one database: restored, skipped (already on the box) or failed."""

    name: str
    path: str
    state: str
    detail: str = ""
    restored: Restored | None = None


async def _folders(client: Any, bucket: str, prefix: str) -> list[str]:
    """The names of the folders directly under `prefix` (which ends in '/' or is empty)."""
    names: list[str] = []
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
    while True:
        page = await client.list_objects_v2(**params)
        for common in page.get("CommonPrefixes", []):
            names.append(str(common["Prefix"])[len(prefix) :].rstrip("/"))
        if not page.get("IsTruncated"):
            return names
        params["ContinuationToken"] = page["NextContinuationToken"]


def _safe(*names: str) -> bool:
    try:
        for name in names:
            check_id("name", name)
    except InvalidName:
        return False  # not a folder fieldbox writes (someone else's, in a shared bucket)
    return True


async def _discover(cfg: BridgeConfig, layout: Layout) -> list[Target]:
    bucket = cfg.s3.bucket
    base = s3.key(cfg.s3)
    root = f"{base}/" if base else ""
    found: list[Target] = []
    async with s3.open_client(cfg.s3) as client:
        for account in await _folders(client, bucket, root):
            for geo in await _folders(client, bucket, f"{root}{account}/"):
                for loc in await _folders(client, bucket, f"{root}{account}/{geo}/"):
                    here = f"{root}{account}/{geo}/{loc}/"
                    if _safe(account, geo, loc) and "db" in await _folders(client, bucket, here):
                        found.append(
                            Target(
                                f"location:{loc}",
                                layout.location_db(account, geo, loc),
                                s3.location_key(cfg.s3, account, geo, loc, "db"),
                            )
                        )
        box = s3.box_id(cfg.s3)
        for name, path in zip(_BOX_DBS, (layout.queue_db, layout.outbox_db), strict=True):
            replica = s3.key(cfg.s3, box, "db", name)
            if await _folders(client, bucket, f"{replica}/"):
                found.append(Target(name, path, replica))
    return found


def discover(cfg: BridgeConfig, layout: Layout) -> list[Target]:
    """Every database with a replica in S3 that this box would restore (blocking)."""
    if not cfg.remote:
        raise RestoreError("no remote: [bridge.s3] bucket is not set")
    try:
        return asyncio.run(_discover(cfg, layout))
    except Exception as exc:
        raise RestoreError(f"cannot list the replicas: {readable(exc, cfg.s3)}") from exc


def restore_all(
    cfg: BridgeConfig, layout: Layout, timestamp: str | None = None, force: bool = False
) -> list[Outcome]:
    """Restore every replicated database into its place on this box; one failure stops none."""
    outcomes: list[Outcome] = []
    for target in discover(cfg, layout):
        where = str(target.path)
        if target.path.exists() and not force:
            outcomes.append(Outcome(target.name, where, "skipped", "already on this box"))
            continue
        try:
            done = restore_target(cfg, target, target.path, timestamp, force)
        except RestoreError as exc:
            outcomes.append(Outcome(target.name, where, "failed", str(exc)))
            continue
        outcomes.append(Outcome(target.name, where, "restored", restored=done))
    return outcomes
