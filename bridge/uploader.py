"""Blob uploads from the outbox to S3: passes over the due rows, retries, backoff, status.

What happens to one row is in `bridge/blobsend.py`. Here: a pass hands due rows to workers;
`upload.concurrency` bounds the bodies in flight (blobs, or parts of a large one), while
twice as many rows may be between their HEADs, metadata and bookkeeping, so round trips
overlap transfers. A failed row is marked failed with a readable error and an exponential,
jittered retry time. A failure that says S3 itself is unusable (unreachable, timing out,
refusing our keys, no such bucket, 5xx) also ends the pass and backs the whole uploader
off, so a dead link costs one error per backoff, not one per row. A row another process
is uploading (`fieldbox sync now` beside the daemon) is skipped: each row in flight holds
a byte-range lock on `bridge/uploader.lock` at its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import structlog

from bridge import s3
from bridge.blobsend import BlobSender
from bridge.config import BridgeConfig
from bridge.multipart import sweep_orphans
from bridge.s3probe import ServerCheck, check_server, lacking
from bridge.throttle import Throttle
from bridge.transfer import Calls, readable
from store.locations import Locations
from store.outbox import Outbox, OutboxItem
from store.paths import Layout

Progress = Callable[[int, int], None]


@dataclass
class PassResult:
    """What one pass over the due rows did."""

    done: int = 0  # rows closed
    uploaded: int = 0  # blobs sent
    already_there: int = 0  # blobs S3 already held
    failed: int = 0
    busy: int = 0  # rows another process is uploading right now
    deferred: int = 0  # rows whose asset may still be being created
    bytes_sent: int = 0
    error: str | None = None  # the error that ended the pass (S3 unusable)


class _Tally:
    """Bytes moved in one pass, for the result, the uploader's totals and the progress bar."""

    def __init__(self, owner: Uploader, result: PassResult, total: int, progress: Progress | None):
        self.owner = owner
        self.result = result
        self.total = total
        self.moved = 0
        self.progress = progress

    def sent(self, n: int) -> None:
        """`n` bytes of a blob left through the throttle."""
        self.overhead(n)
        self.skipped(n)

    def overhead(self, n: int) -> None:
        """`n` bytes left that are no blob's (metadata documents): not on the progress bar."""
        self.result.bytes_sent += n
        self.owner._bytes_sent += n

    def skipped(self, n: int) -> None:
        """`n` bytes of a blob need no sending (S3 already has them)."""
        self.moved += n
        if self.progress is not None:
            self.total = max(self.total, self.moved)
            self.progress(self.moved, self.total)


class Uploader:
    """Copies the outbox's blobs (and their assets' metadata) to S3."""

    def __init__(
        self,
        cfg: BridgeConfig,
        layout: Layout,
        locs: Locations,
        outbox: Outbox,
        throttle: Throttle,
    ) -> None:
        self.cfg = cfg
        self.layout = layout
        self.locs = locs
        self.outbox = outbox
        self.throttle = throttle
        self.log = structlog.get_logger("fieldbox.bridge")
        # A row whose asset is missing is closed only once the asset had time to appear:
        # the outbox row commits just before the asset row.
        self.asset_grace_s = 60.0
        self._active: dict[int, int] = {}
        self._client: Any = None
        self._client_cm: AbstractAsyncContextManager[Any] | None = None
        self._swept = False
        self._state = "idle"
        self._bytes_sent = 0
        self._uploaded = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_success_at: float | None = None
        self._remote_failures = 0
        self._retry_at: float | None = None
        self._window_waits = 0  # polls that found the sync window closed and sent nothing
        # What the S3 server was found to do (bridge/s3probe.py), checked before the first
        # blob of a run; until it passes, each pass checks again (one check per pass).
        self.server_check: ServerCheck | None = None
        self._checking: asyncio.Task[None] | None = None

    def status(self) -> dict[str, Any]:
        """What /health shows: target, state, in flight, bytes sent, last error."""
        c = self.cfg.s3
        sizes = list(self._active.values())
        return {
            "remote": f"s3://{c.bucket}/{c.prefix} at {c.endpoint_url or 'AWS S3'}"
            if self.cfg.remote
            else "no remote",
            "state": self._state,
            "in_flight": len(sizes),
            "in_flight_bytes": sum(sizes),
            "bytes_sent": self._bytes_sent,
            "uploaded": self._uploaded,
            "window_waits": self._window_waits,
            "bandwidth_bytes_per_s": self.throttle.rate,
            "last_success_at": self._last_success_at,
            "last_error": self._last_error,
            "last_error_at": self._last_error_at,
            "retry_at": self._retry_at,
            "server_check": self.server_check.status() if self.server_check else None,
        }

    async def run(self, stop: asyncio.Event, gate: Callable[[], bool]) -> None:
        """Upload due rows while `gate()` allows, until `stop`; a stop leaves uploads resumable."""
        if not self.cfg.remote:
            self._state = "no remote"
            self.log.info("uploader_no_remote", hint="set [bridge.s3] bucket; the outbox waits")
            await _wait(stop, None)
            return
        poll = self.cfg.upload.poll_s
        try:
            while not stop.is_set():
                if self._retry_at is not None and time.time() < self._retry_at:
                    self._state = "backing off"
                    await _wait(stop, self._retry_at - time.time())
                elif not gate():
                    self._state = "waiting for a sync window"
                    self._window_waits += 1
                    await _wait(stop, poll)
                elif not await asyncio.to_thread(self.outbox.due, None, 1):
                    self._state = "idle"
                    await _wait(stop, poll)
                else:
                    result = await self._watched_pass(stop, gate)
                    if (
                        result is not None
                        and result.error is None
                        and not result.done + result.failed
                    ):
                        await _wait(stop, poll)  # only rows busy elsewhere or deferred
        finally:
            await self._drop_client()
            self._state = "stopped"

    async def _watched_pass(
        self, stop: asyncio.Event, gate: Callable[[], bool]
    ) -> PassResult | None:
        """One pass, cut short (None) when `stop` is set or the sync window closes.

        Cutting it short cancels the rows in flight: a multipart upload stays in its row
        and resumes in the next pass; a single PUT is simply sent again.
        """
        task = asyncio.create_task(self._pass(None, keep_client=True))
        stopper = asyncio.create_task(stop.wait())
        try:
            while not task.done():
                await asyncio.wait(
                    {task, stopper}, timeout=self.cfg.upload.poll_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
                if not task.done() and (stop.is_set() or not gate()):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    self.log.info("upload_pass_interrupted", stop=stop.is_set())
                    return None
            return task.result()
        finally:
            stopper.cancel()

    async def drain_once(self, progress: Progress | None = None) -> PassResult:
        """One pass over every row due now (`fieldbox sync now`); ignores the remote backoff."""
        if not self.cfg.remote:
            return PassResult(error="no remote: [bridge.s3] bucket is not set")
        return await self._pass(progress, keep_client=False)

    async def _pass(self, progress: Progress | None, keep_client: bool) -> PassResult:
        result = PassResult()
        self._state = "uploading"
        total = (await asyncio.to_thread(self.outbox.backlog)).bytes
        tally = _Tally(self, result, total, progress)
        concurrency = self.cfg.upload.concurrency
        sender = BlobSender(
            self.cfg, self.layout, self.locs, self.outbox, self.throttle,
            asyncio.Semaphore(concurrency), tally.sent, tally.skipped, tally.overhead,
            self.asset_grace_s, self._server_ready,
        )  # fmt: skip
        locks = _RowLocks(self.layout)
        try:
            calls = Calls(await self._open_client(), self.cfg.s3)
            await self._work(calls, sender, locks, result)
            if not self._swept and result.error is None:
                await self._sweep(calls)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = readable(_unwrap(exc), self.cfg.s3)
            if err.bug:
                self.log.error("uploader_bug", error=str(err), exc_info=exc)
            result.error = str(err)
            self._note_error(str(err))
        finally:
            locks.close()
            if self._checking is not None and not self._checking.done():
                self._checking.cancel()
            self._checking = None
            if not keep_client or result.error is not None:
                await self._drop_client()  # a fresh client re-reads credentials and DNS
        if result.error is not None:
            self._remote_failures += 1
            delay = _backoff(self.cfg, self._remote_failures - 1)
            self._retry_at = time.time() + delay
            self.log.warning("s3_unusable", error=result.error, retry_in_s=round(delay, 1))
        else:
            self._remote_failures = 0
            self._retry_at = None
        self._state = "idle"
        return result

    async def _server_ready(self, calls: Calls) -> None:
        """Return once the S3 server passed its check; raise what it lacks otherwise.

        The rows of a pass share one check: the first row starts it, the others wait for
        it (shielded, so one row cancelled does not cancel it for the rest).
        """
        if self.server_check is not None and not self.server_check.missing:
            return
        if self._checking is None:
            self._checking = asyncio.create_task(self._check_server(calls))
        await asyncio.shield(self._checking)

    async def _check_server(self, calls: Calls) -> None:
        check = await check_server(calls, self.cfg.s3)
        self.server_check = check
        for note in check.notes:
            self.log.warning("s3_server_note", target=self.status()["remote"], note=note)
        if check.missing:
            self.log.error("s3_server_lacks", target=self.status()["remote"], missing=check.missing)
            raise lacking(self.cfg.s3, check)
        self.log.info("s3_server_checked", target=self.status()["remote"])

    async def _open_client(self) -> Any:
        if self._client is None:
            cm = s3.open_client(self.cfg.s3, max_pool=2 * self.cfg.upload.concurrency + 2)
            self._client = await cm.__aenter__()
            self._client_cm = cm
        return self._client

    async def _drop_client(self) -> None:
        cm, self._client, self._client_cm = self._client_cm, None, None
        if cm is not None:
            with contextlib.suppress(Exception):
                await cm.__aexit__(None, None, None)

    async def _sweep(self, calls: Calls) -> None:
        # After the rows, so a dead link is reported by them; a failure here only waits
        # for the next pass.
        try:
            await sweep_orphans(calls, self.cfg, self.locs, self.outbox)
            self._swept = True
        except Exception as exc:
            self.log.warning("multipart_sweep_failed", error=str(readable(exc, self.cfg.s3)))

    async def _work(
        self, calls: Calls, sender: BlobSender, locks: _RowLocks, result: PassResult
    ) -> None:
        workers = 2 * self.cfg.upload.concurrency
        queue: asyncio.Queue[OutboxItem | None] = asyncio.Queue(workers)
        seen: set[int] = set()

        async def produce() -> None:
            while result.error is None:
                due = await asyncio.to_thread(self.outbox.due, None, len(seen) + 200)
                batch = [i for i in due if i.id not in seen]
                if not batch:
                    break
                for item in batch:
                    seen.add(item.id)
                    await queue.put(item)
            for _ in range(workers):
                await queue.put(None)

        async def work() -> None:
            while (item := await queue.get()) is not None:
                if result.error is None:
                    await self._item(calls, sender, locks, item, result)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce())
            for _ in range(workers):
                tg.create_task(work())

    async def _item(
        self,
        calls: Calls,
        sender: BlobSender,
        locks: _RowLocks,
        item: OutboxItem,
        result: PassResult,
    ) -> None:
        if item.id in self._active or not locks.take(item.id):
            result.busy += 1
            return
        self._active[item.id] = item.size
        try:
            outcome = await sender.send(calls, item)
            if outcome == "deferred":
                result.deferred += 1
                return
            result.done += 1
            if outcome == "uploaded":
                result.uploaded += 1
                self._uploaded += 1
            elif outcome == "already there":
                result.already_there += 1
            self._last_success_at = time.time()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = readable(_unwrap(exc), self.cfg.s3)
            if err.bug:
                self.log.error("upload_bug", item=item.id, error=str(err), exc_info=exc)
            retry_at = time.time() + _backoff(self.cfg, item.attempts)
            await asyncio.to_thread(self.outbox.mark_failed, item.id, str(err), retry_at)
            result.failed += 1
            self._note_error(str(err))
            if err.remote:
                result.error = str(err)
            else:
                self.log.warning("upload_failed", item=item.id, asset=item.asset_id, error=str(err))
        finally:
            self._active.pop(item.id, None)
            locks.release(item.id)

    def _note_error(self, error: str) -> None:
        self._last_error = error
        self._last_error_at = time.time()


class _RowLocks:
    """Byte-range locks on `bridge/uploader.lock`, one byte per row id: a row is uploaded by
    one process at a time, and a dead process's locks go with it."""

    def __init__(self, layout: Layout) -> None:
        path = layout.uploader_lock
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def take(self, row: int) -> bool:
        """Lock `row`; False when another process holds it."""
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, row)
        except OSError:
            return False
        return True

    def release(self, row: int) -> None:
        """Unlock `row`."""
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, row)

    def close(self) -> None:
        """Close the file (which drops every lock this process holds on it)."""
        os.close(self.fd)


def _backoff(cfg: BridgeConfig, attempts: int) -> float:
    base = min(cfg.upload.retry_max_s, cfg.upload.retry_base_s * 2.0 ** min(attempts, 30))
    return base * random.uniform(0.5, 1.0)


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _wait(stop: asyncio.Event, seconds: float | None) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
