"""SQLite files with fieldbox's durability rules: WAL, synchronous=FULL, one writer, bounded WAL."""

from __future__ import annotations

import errno
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from store.config import StoreConfig
from store.errors import DiskFull

_SQLITE_FULL = 13
# Most write operations one group commit may carry.
_MAX_BATCH = 256

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
    """One SQLite file: a single writer connection under a lock, and a reader per thread."""

    def __init__(self, path: Path | str, cfg: StoreConfig, migrations: Sequence[str] = ()) -> None:
        self.path = str(path)
        self.cfg = cfg
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Operation[Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._committer: threading.Thread | None = None
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
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); rolled back on any error."""
        with self._lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if is_disk_full(exc):
                    raise DiskFull("no space left on the data disk; nothing was written") from exc
                raise
            self._bound_wal()

    def submit(self, op: Operation[T]) -> Future[T]:
        """Queue `op(conn)` for the next group commit; the future resolves once it is durable.

        Operations of a batch run in arrival order inside one `BEGIN IMMEDIATE ... COMMIT`, so
        each sees every earlier one. One that raises leaves no trace: the batch is rolled
        back and run again without it, so an operation must be safe to run twice (read what
        it checks inside the transaction). A result (or error) is delivered only after the
        COMMIT (one fsync for the whole batch) has returned.
        """
        future: Future[T] = Future()
        with self._readers_lock:
            if self._committer is None:
                self._committer = threading.Thread(
                    target=self._commit_loop, name=f"commit:{Path(self.path).name}", daemon=True
                )
                self._committer.start()
        self._queue.put((op, future))
        return future

    def run(self, op: Operation[T]) -> T:
        """`submit(op)` and wait for it."""
        return self.submit(op).result()

    def _commit_loop(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit_batch(batch)
            if stop:
                return

    def _commit_batch(self, batch: list[tuple[Operation[Any], Future[Any]]]) -> None:
        failed: dict[int, Exception] = {}
        results: dict[int, Any] = {}
        with self._lock:
            conn = self._writer
            while True:
                results.clear()
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    for i, (op, _) in enumerate(batch):
                        if i not in failed:
                            results[i] = _attempt(op, conn, i, failed)
                    conn.execute("COMMIT")
                except _Replay:
                    # No savepoint per operation (each costs GIL round trips on a busy
                    # server): undo the batch and run it again without the one that failed.
                    conn.execute("ROLLBACK")
                    continue
                except Exception as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    error = _disk_full_or(exc)
                    for i, (_, future) in enumerate(batch):
                        future.set_exception(failed.get(i, error))
                    return
                break
            self._bound_wal()
        for i, (_, future) in enumerate(batch):
            if i in failed:
                future.set_exception(failed[i])
            else:
                future.set_result(results[i])

    def read(self) -> sqlite3.Connection:
        """This thread's read connection (readers never block the writer in WAL mode)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.cfg)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _bound_wal(self) -> None:
        # Passive autocheckpoints are starved by a steady stream of readers; past the
        # limit, force a RESTART checkpoint (it waits for readers, within busy_timeout).
        try:
            size = os.path.getsize(self.path + "-wal")
        except OSError:
            return
        if size > self.cfg.wal_max_bytes:
            try:
                self._writer.execute("PRAGMA wal_checkpoint(RESTART)")
            except sqlite3.Error:
                # The write already committed; a checkpoint that fails (disk full, a reader
                # past the busy timeout) is retried after the next write.
                return

    def integrity_check(self) -> str:
        """Run `PRAGMA integrity_check` and return its verdict ('ok' when healthy)."""
        rows = self.read().execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(r[0]) for r in rows)

    def close(self) -> None:
        """Finish queued writes, then close every connection this object opened."""
        if self._committer is not None:
            self._queue.put(None)
            self._committer.join()
            self._committer = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._lock:
            self._writer.close()


class _Replay(Exception):
    """An operation of a batch failed; the batch is rolled back and run without it."""


def _attempt(
    op: Operation[T], conn: sqlite3.Connection, index: int, failed: dict[int, Exception]
) -> T:
    try:
        return op(conn)
    except Exception as exc:
        failed[index] = _disk_full_or(exc)
        raise _Replay from exc


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
