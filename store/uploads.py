"""Resumable-upload sessions: a row in uploads.db and a `.part` file each, surviving restarts."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import msgspec

from store.config import StoreConfig
from store.db import Database, fsync_dir, is_disk_full
from store.errors import Conflict, DiskFull, NotFound
from store.paths import Layout, check_id

UPLOAD_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY, length INTEGER NOT NULL, offset INTEGER NOT NULL DEFAULT 0,
        location TEXT NOT NULL, filename TEXT NOT NULL, project TEXT, kind TEXT NOT NULL,
        mime_type TEXT NOT NULL, declared_sha256 TEXT, actual_sha256 TEXT,
        metadata TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
        asset_id TEXT
    );
    CREATE INDEX uploads_expiry ON uploads (expires_at)
    """,
    # Set durably when a PATCH with Upload-Checksum starts, cleared by the next offset
    # commit: after a power loss, bytes past it were never verified (store/upload_recovery.py).
    "ALTER TABLE uploads ADD COLUMN unverified_from INTEGER",
)

_COLUMNS = (
    "id, length, offset, location, filename, project, kind, mime_type, declared_sha256, "
    "actual_sha256, metadata, created_at, expires_at, asset_id"
)


class PartMissing(NotFound):
    """The upload's part file is gone: moved into the blob store (finished), or lost."""


# Past its expiry, and not waiting for finalize (those are finished at start-up instead).
_EXPIRED = "expires_at < ? AND NOT (offset = length AND asset_id IS NULL)"


def _same_file(fh: IO[bytes], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    """One resumable upload session."""

    id: str
    length: int
    offset: int
    location: str
    filename: str
    project: str | None
    kind: str
    mime_type: str
    declared_sha256: str | None
    actual_sha256: str | None
    metadata: dict[str, str]
    created_at: float
    expires_at: float
    asset_id: str | None

    @property
    def complete(self) -> bool:
        """True once every byte has been received."""
        return self.offset == self.length


def _row(row: tuple[Any, ...]) -> Upload:
    return Upload(
        id=row[0],
        length=row[1],
        offset=row[2],
        location=row[3],
        filename=row[4],
        project=row[5],
        kind=row[6],
        mime_type=row[7],
        declared_sha256=row[8],
        actual_sha256=row[9],
        metadata=json.loads(row[10]),
        created_at=row[11],
        expires_at=row[12],
        asset_id=row[13],
    )


class Uploads:
    """The upload sessions of one data root."""

    def __init__(self, layout: Layout, cfg: StoreConfig) -> None:
        self.layout = layout
        layout.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(layout.uploads_db, cfg, UPLOAD_MIGRATIONS)
        from store.upload_recovery import recover_after_reboot

        # Offsets are committed lazily (see commit_offset): after a reboot, the part files
        # are the record. Every process that opens the sessions checks, before it uses them.
        recover_after_reboot(self)

    def create(
        self,
        *,
        length: int,
        location: str,
        filename: str,
        project: str | None,
        kind: str,
        mime_type: str,
        declared_sha256: str | None,
        metadata: dict[str, str],
        ttl_s: float,
    ) -> Upload:
        """Start a session: an empty, fsynced part file, then its row."""
        now = time.time()
        up = Upload(
            id=secrets.token_hex(16),
            length=length,
            offset=0,
            location=location,
            filename=filename,
            project=project,
            kind=kind,
            mime_type=mime_type,
            declared_sha256=declared_sha256,
            actual_sha256=None,
            metadata=metadata,
            created_at=now,
            expires_at=now + ttl_s,
            asset_id=None,
        )
        part = self.layout.upload_part(up.id)
        try:
            with open(part, "xb") as fh:
                os.fsync(fh.fileno())
            fsync_dir(part.parent)
            with self.db.write() as conn:
                conn.execute(
                    f"INSERT INTO uploads ({_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                    (
                        up.id,
                        up.length,
                        0,
                        location,
                        filename,
                        project,
                        kind,
                        mime_type,
                        declared_sha256,
                        None,
                        json.dumps(metadata),
                        now,
                        up.expires_at,
                        None,
                    ),
                )
        except OSError as exc:
            part.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskFull("no space left on the data disk; upload not created") from exc
            raise
        return up

    def get(self, upload_id: str) -> Upload:
        """The session with this id, or NotFound."""
        check_id("upload id", upload_id)
        row = (
            self.db.read()
            .execute(f"SELECT {_COLUMNS} FROM uploads WHERE id = ?", (upload_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"upload {upload_id!r} not found")
        return _row(row)

    @contextmanager
    def locked_part(self, upload: Upload) -> Iterator[IO[bytes]]:
        """The part file opened for appending at the acknowledged offset, locked exclusively."""
        with self.locked_session(upload) as (fh, _):
            yield fh

    @contextmanager
    def locked_session(self, upload: Upload) -> Iterator[tuple[IO[bytes], Upload]]:
        """`locked_part`'s file and the session as read under its lock (no second read).

        The file is opened for appending at the acknowledged offset and locked exclusively.

        The lock is an flock: it spans processes and dies with a killed process. It is held
        through finalize too, while the part file moves into the blob store, so a request
        that finds no part file (PartMissing) must re-read the row: the upload is finished,
        being finished by the lock's holder, or gone. Bytes past the acknowledged offset (a
        crash mid-write) are cut off first.
        """
        path = self.layout.upload_part(upload.id)
        try:
            # Unbuffered: a failed write (disk full) must fail here, not again at close().
            fh = open(path, "r+b", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError as exc:
            raise PartMissing(f"upload {upload.id!r} has no data file") from exc
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise Conflict(f"upload {upload.id!r} is locked by another request") from exc
            if not _same_file(fh, path):
                # Opened just before the holder moved it into the blob store: never touch it.
                raise PartMissing(f"upload {upload.id!r} has no data file")
            fresh = self.get(upload.id)  # re-read under the lock
            # Only when a cut-off PATCH left bytes past it: most PATCHes skip the syscall.
            if os.fstat(fh.fileno()).st_size != fresh.offset:
                fh.truncate(fresh.offset)
            fh.seek(fresh.offset)
            yield fh, fresh
        finally:
            fh.close()

    def busy(self, upload_id: str) -> bool:
        """True while some request (of any process) holds the upload's lock."""
        try:
            fh = open(self.layout.upload_part(upload_id), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return False
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    def commit_offset(
        self,
        upload_id: str,
        old: int,
        new: int,
        now: float | None = None,
        *,
        durable: bool = True,
    ) -> float:
        """Record that bytes up to `new` are durable (the part file was fsynced first).

        Returns the new expiry. It moves with the bytes: a session expires its ttl (fixed at
        creation) after the last byte it received, so a long upload over a slow link never
        expires while moving. `durable=False` skips the WAL's fsync: the fsynced part file
        already holds the bytes, a killed process keeps the row (it is in the OS's page
        cache), and after a power loss `recover_after_reboot` reads the offset from the file.
        """
        now = time.time() if now is None else now
        with self.db.write(durable=durable) as conn:
            rows = conn.execute(
                "UPDATE uploads SET offset = ?, expires_at = ? + (expires_at - created_at), "
                "unverified_from = NULL WHERE id = ? AND offset = ? RETURNING expires_at",
                (new, now, upload_id, old),
            ).fetchall()
            if len(rows) != 1:
                raise Conflict(f"upload {upload_id!r} moved on while this request wrote to it")
        return float(rows[0][0])

    def mark_unverified(self, upload_id: str, offset: int) -> None:
        """Durably note that bytes from `offset` on await a PATCH's Upload-Checksum verdict."""
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE uploads SET unverified_from = ? WHERE id = ? AND offset = ?",
                (offset, upload_id, offset),
            )
            if cur.rowcount != 1:
                raise Conflict(f"upload {upload_id!r} moved on while this request wrote to it")

    def set_actual_sha256(self, upload_id: str, sha256: str) -> None:
        """Record the digest of the complete file before it moves into the blob store."""
        with self.db.write() as conn:
            conn.execute("UPDATE uploads SET actual_sha256 = ? WHERE id = ?", (sha256, upload_id))

    def mark_done(self, upload_id: str, asset_id: str) -> None:
        """Link a finished upload to the asset it became."""
        with self.db.write() as conn:
            conn.execute("UPDATE uploads SET asset_id = ? WHERE id = ?", (asset_id, upload_id))

    def delete(self, upload_id: str) -> None:
        """Forget a session and its part file."""
        with self.db.write() as conn:
            conn.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
        self.layout.upload_part(upload_id).unlink(missing_ok=True)

    def pending_finalize(self) -> list[Upload]:
        """Sessions that received every byte but have no asset yet (a crash came between)."""
        rows = (
            self.db.read()
            .execute(f"SELECT {_COLUMNS} FROM uploads WHERE offset = length AND asset_id IS NULL")
            .fetchall()
        )
        return [_row(r) for r in rows]

    def expire(self, now: float | None = None) -> int:
        """Delete sessions past their expiry and part files with no session; return the count.

        Each session is deleted under its upload lock and re-checked there, so a PATCH or a
        finalize in flight is never swept from under its request (it is skipped this pass).
        """
        now = time.time() if now is None else now
        rows = self.db.read().execute(f"SELECT id FROM uploads WHERE {_EXPIRED}", (now,)).fetchall()
        removed = 0
        for (upload_id,) in rows:
            try:
                with self.locked_part(self.get(upload_id)):
                    if self._expired(upload_id, now):
                        self.delete(upload_id)
                        removed += 1
            except Conflict:
                continue  # busy: a request is moving its bytes right now
            except PartMissing:
                # No part file: a finished upload (its bytes are a blob now) or lost data.
                if self._expired(upload_id, now):
                    self.delete(upload_id)
                    removed += 1
            except NotFound:
                continue  # deleted meanwhile by its client
        known = {r[0] for r in self.db.read().execute("SELECT id FROM uploads").fetchall()}
        for part in self.layout.uploads_dir.glob("*.part"):
            if part.stem not in known and part.stat().st_mtime < now - 60:
                part.unlink(missing_ok=True)
        return removed

    def _expired(self, upload_id: str, now: float) -> bool:
        row = (
            self.db.read()
            .execute(f"SELECT 1 FROM uploads WHERE id = ? AND {_EXPIRED}", (upload_id, now))
            .fetchone()
        )
        return row is not None

    def close(self) -> None:
        """Close the sessions database."""
        self.db.close()
