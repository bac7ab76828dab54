"""The sync outbox (`outbox.db`): one row per asset whose blob the bridge still owes S3.

The row is committed before the asset row that makes an upload acknowledged, so every
acknowledged asset has one. A crash between the two leaves a row naming an asset that was
never created; the bridge uploads its blob anyway (content-addressed, so harmless) and
closes it. Rows are marked done only after S3 confirmed the object, and pruned later.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from store.config import StoreConfig
from store.db import Database
from store.errors import NotFound

OUTBOX_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        asset_id TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL, geo_prefix TEXT NOT NULL, location TEXT NOT NULL,
        sha256 TEXT NOT NULL, size INTEGER NOT NULL,
        kind TEXT NOT NULL, filename TEXT NOT NULL, mime_type TEXT NOT NULL,
        created_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try_at REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        multipart_upload_id TEXT,
        done_at REAL,
        note TEXT
    );
    CREATE INDEX outbox_due ON outbox (state, next_try_at, id);
    CREATE TABLE sync_status (
        name TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL NOT NULL
    )
    """,
)

OutboxState = Literal["pending", "done"]
_COLUMNS = (
    "id, asset_id, account, geo_prefix, location, sha256, size, kind, filename, mime_type, "
    "created_at, state, attempts, next_try_at, last_error, multipart_upload_id, done_at, note"
)


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    """One blob the bridge owes S3, with what it knows of the asset."""

    id: int
    asset_id: str
    account: str
    geo_prefix: str
    location: str
    sha256: str
    size: int
    kind: str
    filename: str
    mime_type: str
    created_at: float
    state: OutboxState
    attempts: int
    next_try_at: float
    last_error: str | None
    multipart_upload_id: str | None
    done_at: float | None
    note: str | None


class Backlog(msgspec.Struct, frozen=True, kw_only=True):
    """What `fieldbox sync status` shows: the pending items and the last outcomes."""

    items: int
    bytes: int
    oldest_created_at: float | None
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None


def _item(row: tuple[Any, ...]) -> OutboxItem:
    return OutboxItem(**dict(zip(OutboxItem.__struct_fields__, row, strict=True)))


class Outbox:
    """The outbox database: the api, worker and bridge add rows; only the bridge closes them."""

    def __init__(self, path: str, cfg: StoreConfig) -> None:
        self.db = Database(path, cfg, OUTBOX_MIGRATIONS)

    def add(
        self,
        *,
        asset_id: str,
        account: str,
        geo_prefix: str,
        location: str,
        sha256: str,
        size: int,
        kind: str,
        filename: str,
        mime_type: str,
    ) -> None:
        """Owe S3 this asset's blob; a repeat for the same asset changes nothing."""
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO outbox (asset_id, account, geo_prefix, location, sha256,"
                " size, kind, filename, mime_type, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (asset_id, account, geo_prefix, location, sha256, size, kind, filename,
                 mime_type, time.time()),
            )  # fmt: skip

    def get(self, item_id: int) -> OutboxItem:
        """One row by id, or NotFound."""
        row = (
            self.db.read()
            .execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (item_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no outbox item {item_id}")
        return _item(row)

    def due(self, now: float | None = None, limit: int = 100) -> list[OutboxItem]:
        """Pending rows whose retry time has come, oldest first."""
        now = time.time() if now is None else now
        rows = self.db.read().execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' AND next_try_at <= ?"
            " ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [_item(r) for r in rows]

    def pending(self) -> list[OutboxItem]:
        """Every pending row, oldest first (for status and tests)."""
        rows = self.db.read().execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY id"
        )
        return [_item(r) for r in rows]

    def set_multipart(self, item_id: int, upload_id: str | None) -> None:
        """Remember (or forget) the S3 multipart upload in flight, so a restart can resume it."""
        with self.db.write() as conn:
            conn.execute(
                "UPDATE outbox SET multipart_upload_id = ? WHERE id = ?", (upload_id, item_id)
            )

    def mark_done(self, item_id: int, note: str | None = None) -> None:
        """S3 confirmed the object: close the row and record the success."""
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                "UPDATE outbox SET state = 'done', done_at = ?, note = ?, last_error = NULL,"
                " multipart_upload_id = NULL WHERE id = ?",
                (now, note, item_id),
            )
            _set_status(conn, "last_success", "", now)

    def mark_failed(self, item_id: int, error: str, retry_at: float) -> None:
        """An attempt failed: count it, keep the row pending until `retry_at`."""
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_try_at = ?"
                " WHERE id = ?",
                (error, retry_at, item_id),
            )
            _set_status(conn, "last_error", error, now)

    def retry_all_now(self) -> int:
        """Make every pending row due at once (`fieldbox sync now`); return how many."""
        with self.db.write() as conn:
            cur = conn.execute("UPDATE outbox SET next_try_at = 0 WHERE state = 'pending'")
            return int(cur.rowcount)

    def backlog(self) -> Backlog:
        """Pending count, bytes and oldest age, with the last success and the last error."""
        conn = self.db.read()
        count, size, oldest = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0), min(created_at) FROM outbox"
            " WHERE state = 'pending'"
        ).fetchone()
        status = {
            name: (value, at)
            for name, value, at in conn.execute("SELECT name, value, at FROM sync_status")
        }
        ok = status.get("last_success")
        err = status.get("last_error")
        return Backlog(
            items=int(count),
            bytes=int(size),
            oldest_created_at=oldest,
            last_success_at=ok[1] if ok else None,
            last_error=err[0] if err else None,
            last_error_at=err[1] if err else None,
        )

    def prune_done(self, older_than_s: float, now: float | None = None) -> int:
        """Delete rows done more than `older_than_s` ago; return how many."""
        cutoff = (time.time() if now is None else now) - older_than_s
        with self.db.write() as conn:
            cur = conn.execute("DELETE FROM outbox WHERE state = 'done' AND done_at < ?", (cutoff,))
            return int(cur.rowcount)

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def _set_status(conn: Any, name: str, value: str, at: float) -> None:
    conn.execute(
        "INSERT INTO sync_status (name, value, at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at",
        (name, value, at),
    )
