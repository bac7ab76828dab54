"""Writing an upload's bytes on a thread beside the receive loop: write, hash, flush."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from concurrent.futures import Future
from typing import IO, Any

_FLUSH_EVERY = 16 << 20
_MAX_PENDING = 64 << 20


class PartWriter:
    """Appends chunks to a part file in order on its own thread, hashing them as they land.

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
        self._done: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="part-writer", daemon=True)
        self._thread.start()

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

    async def finish(self) -> None:
        """Wait until every queued byte is written and fsynced; raise the writer's error."""
        self._queue.put(None)
        await asyncio.wrap_future(self._done)
        if self._error is not None:
            raise self._error

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
        self._done.set_result(None)

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
