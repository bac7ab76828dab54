"""Writing an upload's bytes on a thread beside the receive loop: write, hash, flush."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import IO, Any

_FLUSH_EVERY = 16 << 20
_MAX_PENDING = 64 << 20
# Idle writer threads kept for the next PATCH; more run while more PATCHes are in flight.
_KEEP_IDLE = 4


class _Pool:
    """Long-lived daemon threads that run one writer at a time each.

    Starting a thread per PATCH cost about 0.1 ms on the bench machine, a few percent of a
    64 KiB PATCH; a pooled thread is woken instead. Daemon threads, so a writer that never
    got its end (a bug) cannot hold up the process's exit.
    """

    def __init__(self, keep_idle: int) -> None:
        self.keep_idle = keep_idle
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Callable[[], None]]] = []

    def run(self, job: Callable[[], None]) -> None:
        """Run `job` on an idle pooled thread, or on a new one when none is idle."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._serve, args=(inbox,), name="part-writer", daemon=True
            ).start()
        inbox.put(job)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            inbox.get()()
            with self._lock:
                if len(self._idle) >= self.keep_idle:
                    return
                self._idle.append(inbox)


_POOL = _Pool(_KEEP_IDLE)


class PartWriter:
    """Appends chunks to a part file in order on a pooled thread, hashing them as they land.

    The event loop only receives; writing, hashing (which releases the GIL) and early
    `fdatasync`s (so the final one has little left to flush) run on the other core.
    Memory is bounded: `feed` waits while more than `max_pending` bytes are queued.
    """

    def __init__(
        self,
        fh: IO[bytes],
        hashers: list[Any],
        *,
        flush_every: int = _FLUSH_EVERY,
        max_pending: int = _MAX_PENDING,
    ) -> None:
        self.fh = fh
        self.hashers = hashers
        self.flush_every = flush_every
        self.max_pending = max_pending
        self.written = 0
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._drained: Future[None] | None = None
        self._error: OSError | None = None
        self._after: Callable[[], Any] | None = None
        self._done: Future[Any] = Future()
        _POOL.run(self._run)

    async def feed(self, data: bytes) -> None:
        """Queue `data`; raises the writer's OSError (disk full) as soon as one happened."""
        if self._error is not None:
            raise self._error
        with self._lock:
            self._pending += len(data)
            if self._pending > self.max_pending and self._drained is None:
                self._drained = Future()
            waiter = self._drained
        self._queue.put(data)
        if waiter is not None:
            await asyncio.wrap_future(waiter)

    async def finish(self, after: Callable[[], Any] | None = None) -> Any:
        """Wait until every queued byte is written and fsynced; raise the writer's error.

        `after` runs on the writer's thread once the fsync succeeded (so recording the new
        offset costs no second thread hop); its result is returned and its error raised.
        """
        self._after = after
        self._queue.put(None)  # the writer reads `_after` only after taking this None
        result = await asyncio.wrap_future(self._done)
        if self._error is not None:
            raise self._error
        return result

    def _run(self) -> None:
        unflushed = 0
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _write_all(self.fh, data)
                    for h in self.hashers:
                        h.update(data)
                    self.written += len(data)
                    unflushed += len(data)
                    if unflushed >= self.flush_every:
                        os.fdatasync(self.fh.fileno())
                        unflushed = 0
                except OSError as exc:
                    self._error = exc
            self._release(len(data))
        if self._error is None:
            try:
                os.fsync(self.fh.fileno())
            except OSError as exc:
                self._error = exc
        self._release(0, everything=True)
        if self._error is not None or self._after is None:
            self._done.set_result(None)
            return
        try:
            self._done.set_result(self._after())
        except BaseException as exc:  # handed to the awaiting request, not lost on this thread
            self._done.set_exception(exc)

    def _release(self, size: int, everything: bool = False) -> None:
        with self._lock:
            self._pending -= size
            drained = self._drained
            if drained is not None and (
                everything or self._error is not None or self._pending <= self.max_pending // 2
            ):
                self._drained = None
            else:
                drained = None
        if drained is not None:
            drained.set_result(None)


def _write_all(fh: IO[bytes], data: bytes) -> None:
    # The part file is unbuffered, so a write may be short: loop until all of it is down.
    view = memoryview(data)
    while view:
        written = fh.write(view)
        view = view[written or 0 :]
