"""SQLite files with fieldbox's durability rules: WAL, synchronous=FULL, one writer, bounded WAL.

Also the helpers for plain files that must never be seen half-written: `replace_file`
(temp file beside the target, then a rename) and its reader `read_json`, `fsync_dir`,
`makedirs_durable`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from store.config import StoreConfig
from store.errors import DiskFull

_SQLITE_FULL = 13
T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc` means the filesystem (or SQLite's file) ran out of space."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == _SQLITE_FULL or "disk is full" in str(exc) or "disk I/O error" in str(exc)
    return False


def is_locked(exc: BaseException) -> bool:
    """True when `exc` is SQLite giving up on a lock another connection held past the timeout."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    message = str(exc)
    return (
        code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        or "locked" in message
        or "busy" in message
    )


def connect(path: Path | str, cfg: StoreConfig) -> sqlite3.Connection:
    """Open one connection with the pragmas every fieldbox database uses."""
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=cfg.busy_timeout_ms / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {int(cfg.busy_timeout_ms)}")
    if str(path) != ":memory:":
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch {path} to WAL (got {mode})")
    # FULL: in WAL mode NORMAL may roll back a committed transaction on power loss.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {int(cfg.wal_autocheckpoint_pages)}")
    conn.execute(f"PRAGMA journal_size_limit = {int(cfg.wal_max_bytes)}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> int:
    """Apply numbered migrations (index + 1 = version) past `PRAGMA user_version`; return it."""
    # An up-to-date database is only read: opening it never waits for another writer.
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) >= len(migrations):
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for number, script in enumerate(migrations, start=1):
            if number <= version:
                continue
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            version = number
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version


class Database:
    """One SQLite file: a single writer connection under a lock, and a reader per thread
    (":memory:" is one connection for both)."""

    def __init__(self, path: Path | str, cfg: StoreConfig, migrations: Sequence[str] = ()) -> None:
        self.path = str(path)
        self.cfg = cfg
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        try:
            self._writer = connect(self.path, cfg)
            migrate(self._writer, migrations)
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise DiskFull(f"no space left to open {Path(self.path).name}") from exc
            raise

    @property
    def utils(self) -> sqlite_utils.Database:
        """A sqlite-utils view over the writer connection (for introspection and tests)."""
        return sqlite_utils.Database(self._writer)

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); rolled back on any error.

        `durable=False` commits without fsyncing the WAL (synchronous=NORMAL): other
        connections see it at once and it survives a killed process, but a power loss may roll
        it back, with every such commit since the WAL's last fsync (the next durable commit
        or checkpoint syncs them all). NORMAL, not OFF: an autocheckpoint this commit runs
        still fsyncs before it reuses the WAL, so earlier durable commits stay durable.
        """
        with self._lock:
            conn = self._writer
            try:
                if not durable:
                    conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if is_disk_full(exc):
                    raise DiskFull("no space left on the data disk; nothing was written") from exc
                raise
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous = FULL")
            self._bound_wal()

    def run(self, op: Operation[T]) -> T:
        """Run one write operation in its own `write()` transaction and return its result."""
        with self.write() as conn:
            return op(conn)

    def read(self) -> sqlite3.Connection:
        """This thread's read connection (readers never block the writer in WAL mode)."""
        if self.path == ":memory:":
            # Every connection to ":memory:" is a database of its own: a reader of its own
            # would see none of the writer's rows. An in-memory database (tests, tools) has
            # one connection, so a read inside another thread's open write sees that write.
            return self._writer
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.cfg)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _bound_wal(self) -> None:
        bound_wal(self._writer, self.path, self.cfg.wal_max_bytes)

    def integrity_check(self) -> str:
        """Run `PRAGMA integrity_check` and return its verdict ('ok' when healthy)."""
        rows = self.read().execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._lock:
            self._writer.close()


def apply_ops(conn: sqlite3.Connection, ops: Sequence[Operation[Any]]) -> list[tuple[bool, Any]]:
    """Run `ops` in order inside the open transaction, each in its own SAVEPOINT.

    Returns (True, result) or (False, error) per operation; one that raises is rolled back
    alone and the others stand. The caller commits.
    """
    outcomes: list[tuple[bool, Any]] = []
    for op in ops:
        conn.execute("SAVEPOINT op")
        try:
            outcomes.append((True, op(conn)))
            conn.execute("RELEASE op")
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            outcomes.append((False, _disk_full_or(exc)))
    return outcomes


def bound_wal(conn: sqlite3.Connection, path: str, max_bytes: int) -> None:
    """Force a RESTART checkpoint when the WAL has outgrown `max_bytes`.

    Passive autocheckpoints are starved by a steady stream of readers; a RESTART waits for
    them (within the busy timeout). The write before this already committed, so a failed
    checkpoint (disk full, readers past the timeout) is left for the next write to retry.
    """
    try:
        size = os.path.getsize(path + "-wal")
    except OSError:
        return
    if size > max_bytes:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(RESTART)")


def _disk_full_or(exc: Exception) -> Exception:
    if is_disk_full(exc):
        return DiskFull("no space left on the data disk; nothing was written")
    return exc


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes | str, durable: bool = False) -> None:
    """Write `path` whole or not at all; `durable` also fsyncs the file and its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named per process: two processes replacing the same file never share a temp file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object `replace_file` wrote at `path`; None if there is none or it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def makedirs_durable(path: Path) -> None:
    """Create `path` and any missing parents, fsyncing each parent that gained an entry."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)
