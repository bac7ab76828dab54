"""Assets: rows in a location's database that link a blob to what it is (kind, file, project)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from typing import Any

import msgspec

from store import search_index
from store.db import Database
from store.errors import InvalidName, NotFound
from store.paths import check_id

_SUFFIX = re.compile(r"^[0-9a-f]{20}\Z")
_COLUMNS = "id, project, kind, filename, mime_type, size, sha256, created_at, metadata, upload_id"


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    """A stored file: its blob digest and what the crew said it is."""

    id: str
    location: str
    project: str | None
    kind: str
    filename: str
    mime_type: str
    size: int
    sha256: str
    created_at: float
    metadata: dict[str, Any]
    upload_id: str | None = None


def new_asset_id(location: str) -> str:
    """A time-ordered asset id that names its location (`{location}.{20 hex}`)."""
    return f"{location}.{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


def job_output_id(location: str, job_id: str, job_created_at: float, output: str) -> str:
    """The one asset id a job's named output ever gets, whichever attempt stores it.

    Same shape as `new_asset_id`: the job's creation time, then 8 hex of a digest of
    (job, output) where the random part would be, so a retry finds what it stored.
    """
    digest = hashlib.sha256(f"{job_id}\0{output}".encode()).hexdigest()[:8]
    return f"{location}.{int(job_created_at * 1000):012x}{digest}"


def location_of(asset_id: str) -> str:
    """The location id encoded in an asset id; InvalidName if the id is malformed."""
    loc, dot, suffix = asset_id.rpartition(".")
    if not dot or not _SUFFIX.match(suffix):
        raise InvalidName(f"invalid asset id {asset_id!r}")
    return check_id("location id", loc)


def _row(location: str, row: tuple[Any, ...]) -> Asset:
    return Asset(
        id=row[0],
        location=location,
        project=row[1],
        kind=row[2],
        filename=row[3],
        mime_type=row[4],
        size=row[5],
        sha256=row[6],
        created_at=row[7],
        metadata=json.loads(row[8]),
        upload_id=row[9],
    )


def create(db: Database, asset: Asset, facts: dict[str, Any] | None = None) -> Asset:
    """Insert an asset; idempotent on `id` and `upload_id` (a repeat returns the stored row).

    Its ask-index chunks go in with it; `facts` (a scene-facts asset's JSON) adds its tracks.
    """
    with db.write() as conn:
        # Checked inside the write lock, so two processes storing one id never make two rows.
        row = conn.execute(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (asset.id,)).fetchone()
        if row is not None:
            return _row(asset.location, row)
        if asset.upload_id is not None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM assets WHERE upload_id = ?", (asset.upload_id,)
            ).fetchone()
            if row is not None:
                return _row(asset.location, row)
        conn.execute(
            f"INSERT INTO assets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                asset.id,
                asset.project,
                asset.kind,
                asset.filename,
                asset.mime_type,
                asset.size,
                asset.sha256,
                asset.created_at,
                json.dumps(asset.metadata),
                asset.upload_id,
            ),
        )
        search_index.index_asset(
            conn,
            asset.id,
            kind=asset.kind,
            filename=asset.filename,
            project=asset.project,
            metadata=asset.metadata,
            facts=facts,
        )
    return asset


def get(db: Database, location: str, asset_id: str) -> Asset:
    """The asset with this id, or NotFound."""
    row = db.read().execute(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (asset_id,)).fetchone()
    if row is None:
        raise NotFound(f"asset {asset_id!r} not found")
    return _row(location, row)


def find(db: Database, location: str, asset_id: str) -> Asset | None:
    """The asset with this id, or None."""
    row = db.read().execute(f"SELECT {_COLUMNS} FROM assets WHERE id = ?", (asset_id,)).fetchone()
    return None if row is None else _row(location, row)


def by_upload(db: Database, location: str, upload_id: str) -> Asset | None:
    """The asset an upload produced, if it has been created."""
    row = (
        db.read()
        .execute(f"SELECT {_COLUMNS} FROM assets WHERE upload_id = ?", (upload_id,))
        .fetchone()
    )
    return None if row is None else _row(location, row)


def newest_per_sha(
    db: Database,
    location: str,
    *,
    project: str | None,
    before: tuple[float, str] | None,
    limit: int,
) -> list[Asset]:
    """Newest-first assets, one per sha256 (the newest copy), older than cursor `before`."""
    where = ["1 = 1"]
    args: list[Any] = []
    if project is not None:
        where.append("a.project = ?")
        args.append(project)
    if before is not None:
        where.append("(a.created_at, a.id) < (?, ?)")
        args.extend(before)
    # An asset is listed only if no newer asset (within the same filter) shares its digest.
    newer = (
        "SELECT 1 FROM assets b WHERE b.sha256 = a.sha256 "
        "AND (b.created_at, b.id) > (a.created_at, a.id)"
    )
    if project is not None:
        newer += " AND b.project = a.project"
    cols = ", ".join(f"a.{c.strip()}" for c in _COLUMNS.split(","))
    sql = (
        f"SELECT {cols} FROM assets a WHERE {' AND '.join(where)} AND NOT EXISTS ({newer}) "
        "ORDER BY a.created_at DESC, a.id DESC LIMIT ?"
    )
    rows = db.read().execute(sql, (*args, limit)).fetchall()
    return [_row(location, r) for r in rows]


def digests(db: Database) -> list[tuple[str, int]]:
    """(sha256, size) of every distinct blob this location's assets refer to."""
    rows = db.read().execute("SELECT DISTINCT sha256, size FROM assets ORDER BY sha256")
    return [(str(sha), int(size)) for sha, size in rows]


def has_newer_copy(
    db: Database, sha256: str, created_at: float, asset_id: str, project: str | None
) -> bool:
    """True when this database holds a newer asset with the same digest (for cross-DB dedup)."""
    sql = "SELECT 1 FROM assets WHERE sha256 = ? AND (created_at, id) > (?, ?)"
    args: list[Any] = [sha256, created_at, asset_id]
    if project is not None:
        sql += " AND project = ?"
        args.append(project)
    return db.read().execute(sql + " LIMIT 1", args).fetchone() is not None


def for_project(db: Database, location: str, project: str) -> list[Asset]:
    """Every asset of a project in this location, newest first."""
    rows = (
        db.read()
        .execute(
            f"SELECT {_COLUMNS} FROM assets WHERE project = ? ORDER BY created_at DESC, id DESC",
            (project,),
        )
        .fetchall()
    )
    return [_row(location, r) for r in rows]
