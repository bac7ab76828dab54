"""Group commit on the event loop: writes queue up while the loop works, then commit together.

Measured on the bench machine (docs/performance.md): handing each batch to a commit thread
cost about 320 µs of CPU per write in thread wake-ups and GIL hand-offs, more than the write
itself; one fsync costs about 280 µs of kernel time. So the loop runs the whole batch itself
(BEGIN IMMEDIATE, each operation in a SAVEPOINT, COMMIT) and pays one fsync per batch. The
loop is blocked for that fsync; it never waits for another process's lock (busy timeout 0 on
this connection, retried with call_later until the configured busy timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any, TypeVar

from store.config import StoreConfig
from store.db import Operation, apply_ops, bound_wal, connect, is_disk_full, is_locked
from store.errors import DiskFull, StoreError

T = TypeVar("T")

_MAX_BATCH = 256
_BUSY_RETRY_S = 0.001
# Loop passes a batch waits before it commits (measured: 1-3 all beat 0; 2 chosen).
_HOPS = 2


class DatabaseBusy(StoreError):
    """Another process held the write lock past the busy timeout."""


class AsyncCommitter:
    """The api's writer for one SQLite file: batches writes, one fsync per batch."""

    def __init__(self, path: str, cfg: StoreConfig) -> None:
        self.path = path
        self.cfg = cfg
        self.conn = connect(path, cfg)
        # Never block the loop on another process's lock: retry with call_later instead.
        self.conn.execute("PRAGMA busy_timeout = 0")
        self._pending: list[tuple[Operation[Any], asyncio.Future[Any]]] = []
        self._active = False

    async def run(self, op: Operation[T]) -> T:
        """Run `op` in the next batch; return its result once the batch is on disk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, future))
        if not self._active:
            self._active = True
            loop.call_soon(self._begin, loop, loop.time() + self.cfg.busy_timeout_ms / 1000)
        return await future

    def _begin(self, loop: asyncio.AbstractEventLoop, deadline: float, hops: int = _HOPS) -> None:
        if hops > 0:
            # Let the loop read and dispatch what other clients sent meanwhile, so their
            # writes join this batch (a request needs a pass or two to reach its write).
            loop.call_soon(self._begin, loop, deadline, hops - 1)
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_locked(exc):
                if loop.time() < deadline:
                    loop.call_later(_BUSY_RETRY_S, self._begin, loop, deadline, 0)
                    return
                self._fail(DatabaseBusy("the database stayed locked by another process"))
            else:
                self._fail(_mapped(exc))
            self._next(loop)
            return
        batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        try:
            outcomes = apply_ops(self.conn, [op for op, _ in batch])
            self.conn.execute("COMMIT")
        except Exception as exc:  # a SAVEPOINT or the COMMIT failed: nothing was written
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            outcomes = [(False, _mapped(exc))] * len(batch)
        else:
            bound_wal(self.conn, self.path, self.cfg.wal_max_bytes)
        _settle(batch, outcomes)
        self._next(loop)

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pending:
            loop.call_soon(self._begin, loop, loop.time() + self.cfg.busy_timeout_ms / 1000)
        else:
            self._active = False

    def _fail(self, error: Exception) -> None:
        batch, self._pending = self._pending, []
        _settle(batch, [(False, error)] * len(batch))

    def close(self) -> None:
        """Close the connection (the api has finished its requests by now)."""
        self.conn.close()


def _mapped(exc: BaseException) -> Exception:
    if is_disk_full(exc):
        return DiskFull("no space left on the data disk; nothing was written")
    return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))


def _settle(
    batch: list[tuple[Operation[Any], asyncio.Future[Any]]], outcomes: list[tuple[bool, Any]]
) -> None:
    for (ok, value), (_, future) in zip(outcomes, batch, strict=True):
        if future.done():  # the request went away; its write stands or not, unacknowledged
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
