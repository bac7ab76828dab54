"""Telemetry shipping: finished spool files become gzip JSONL objects in S3, then are pruned.

Objects go to `{prefix}/telemetry/{box_id}/{yyyy}/{mm}/{dd}/{hh}-{seq}.jsonl.gz` (the spool's
UTC hour), each at most `max_object_bytes` of lines before compression. Which files are
finished, how batches are cut and how the journal works is in `bridge/telemetry_batches.py`.

Crash safety, the S3 half: a batch is journaled (key, byte ranges, sha256 of its lines) before
it is sent; the object is written with `IfNoneMatch: *`, a CRC64NVME checksum, and the sha256
in its metadata. Source files are deleted only after HeadObject showed the object with that
sha256 and our size. So a crash at any point neither loses nor duplicates a line:
  * before or during the PUT: the restart sends the same bytes to the same key;
  * after the PUT: the retry gets 412, HeadObject shows our sha256, the files are pruned;
  * between deleting files and clearing the batch: HeadObject shows the object, the
    batch is cleared without reading the (gone) files.
A 412 under a foreign sha256 (the journal was lost and a seq came round again) takes the next
seq. A journaled batch whose object is absent and whose files changed is planned afresh; the
one gap is a PUT from an earlier round still in flight at S3 past the client's timeouts.

Telemetry ignores sync windows and the bandwidth cap: it is small, and operators want it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import structlog
from awscrt import checksums  # type: ignore[import-untyped]

from bridge.config import BridgeConfig
from bridge.s3 import S3Client, box_id, key
from bridge.telemetry_batches import Batch, Journal, scan_spool
from store.paths import Layout

_SHA_META = "fieldbox-sha256"
_KEY_TRIES = 5

ClientFactory = Callable[[], AbstractAsyncContextManager[S3Client]]


@dataclass
class ShipResult:
    """What one `ship_once` did."""

    objects: int = 0
    files_pruned: int = 0
    raw_bytes: int = 0
    compressed_bytes: int = 0
    keys: list[str] = field(default_factory=list)
    skipped: bool = False


class ShipError(Exception):
    """S3 did not confirm an object; nothing local was deleted."""


def _crc_b64(data: bytes) -> str:
    return base64.b64encode(int(checksums.crc64nvme(data)).to_bytes(8, "big")).decode("ascii")


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    err = response.get("Error", {})
    return str(err.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _describe(exc: BaseException) -> str:
    code = _code(exc)
    text = str(exc) or type(exc).__name__
    return f"{code}: {text}" if code else f"{type(exc).__name__}: {text}"


class TelemetryShipper:
    """Ships finished telemetry spool files to S3 and keeps the spool under its cap."""

    def __init__(
        self, cfg: BridgeConfig, layout: Layout, clock: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self.log = structlog.get_logger("fieldbox.bridge")
        self.journal = Journal(layout, self._key, clock, self.log)
        self.journal.load()  # status() shows the persisted counters before the first round
        self.last_error: str | None = None
        self._stop: asyncio.Event | None = None
        self._stall_s = cfg.s3.connect_timeout_s + cfg.s3.read_timeout_s

    def _key(self, day: str, hour: int, seq: int) -> str:
        yyyy, mm, dd = day.split("-")
        name = f"{hour:02d}-{seq:06d}.jsonl.gz"
        return key(self.cfg.s3, "telemetry", box_id(self.cfg.s3), yyyy, mm, dd, name)

    async def _call(self, client: S3Client, op: str, **params: Any) -> dict[str, Any]:
        # botocore's timeouts do not catch a half-open connection; this bound does.
        async with asyncio.timeout(self._stall_s):
            result: dict[str, Any] = await getattr(client, op)(Bucket=self.cfg.s3.bucket, **params)
            return result

    async def _head(self, client: S3Client, object_key: str) -> dict[str, Any] | None:
        try:
            return await self._call(client, "head_object", Key=object_key, ChecksumMode="ENABLED")
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    async def _put(self, client: S3Client, batch: Batch, gz: bytes) -> bool:
        """Send the object; True once S3 holds our lines under the key, False if it holds others.

        A 412 means the key exists: ours when its sha256 is ours (a retry after a crash; its
        bytes may differ if another zlib compressed them), someone else's otherwise.
        """
        crc = _crc_b64(gz)
        wrote = True
        try:
            await self._call(
                client,
                "put_object",
                Key=batch.key,
                Body=gz,
                ContentType="application/gzip",
                Metadata={_SHA_META: batch.sha256},
                ChecksumAlgorithm="CRC64NVME",
                ChecksumCRC64NVME=crc,
                IfNoneMatch="*",
            )
        except Exception as exc:
            if _code(exc) not in ("412", "PreconditionFailed"):
                raise
            wrote = False
        head = await self._head(client, batch.key)
        if head is None:
            raise ShipError(f"{batch.key}: S3 accepted the object but HeadObject finds none")
        if head.get("Metadata", {}).get(_SHA_META) != batch.sha256:
            if wrote:
                raise ShipError(f"{batch.key}: S3 holds other content than was just written")
            return False
        size = int(head.get("ContentLength", -1))
        if wrote and (size != len(gz) or head.get("ChecksumCRC64NVME") not in (None, crc)):
            raise ShipError(f"{batch.key}: S3 reports {size} bytes, not {len(gz)}")
        return True

    async def _ship(
        self, client: S3Client, batch: Batch, body: bytes | None, res: ShipResult
    ) -> None:
        journal = self.journal
        if body is None:  # journaled before a restart: S3 may already hold it
            head = await self._head(client, batch.key)
            if head is not None and head.get("Metadata", {}).get(_SHA_META) == batch.sha256:
                res.files_pruned += await asyncio.to_thread(journal.finish, batch)
                return
            body = await asyncio.to_thread(journal.body, batch.pieces)
            if body is None or hashlib.sha256(body).hexdigest() != batch.sha256:
                self.log.warning("telemetry_batch_replanned", key=batch.key)
                await asyncio.to_thread(journal.forget)
                return
        if not body:  # only empty files: nothing to send
            res.files_pruned += await asyncio.to_thread(journal.finish, batch)
            return
        gz = await asyncio.to_thread(gzip.compress, body, 6, mtime=0)
        for _ in range(_KEY_TRIES):
            if await self._put(client, batch, gz):
                res.files_pruned += await asyncio.to_thread(journal.finish, batch)
                res.objects += 1
                res.raw_bytes += len(body)
                res.compressed_bytes += len(gz)
                res.keys.append(batch.key)
                self.log.info("telemetry_shipped", key=batch.key, bytes=len(body), gz=len(gz))
                return
            self.log.warning("telemetry_key_taken", key=batch.key)
            await asyncio.to_thread(journal.rekey, batch)
        raise ShipError(f"{batch.key}: every key tried holds other content")

    async def ship_once(self, client: S3Client) -> ShipResult:
        """Ship every finished spool file; delete each only after S3 confirmed its object."""
        result = ShipResult()
        limit = self.cfg.telemetry.max_object_bytes
        with self.journal.exclusive() as held:
            if not held:
                result.skipped = True
                return result
            while self._stop is None or not self._stop.is_set():
                pending = self.journal.state.pending
                if pending is not None:
                    await self._ship(client, pending, None, result)
                    continue
                planned = await asyncio.to_thread(self.journal.plan, limit)
                if planned is None:
                    break
                await self._ship(client, planned[0], planned[1], result)
        return result

    def enforce_cap(self) -> int:
        """Drop the oldest finished telemetry files past `max_spool_bytes`; return how many."""
        cap = self.cfg.telemetry.max_spool_bytes
        with self.journal.exclusive() as held:
            if not held:
                return 0  # a ship round holds the spool; the run loop enforces after it
            dropped, left = self.journal.drop_oldest(cap)
        if dropped:
            self.log.warning("telemetry_dropped", files=dropped, spool_bytes=left, cap=cap)
        return dropped

    async def run(self, stop: asyncio.Event, client_factory: ClientFactory) -> None:
        """Every `interval_s`: ship (when S3 is configured), then enforce the cap; until `stop`."""
        self._stop = stop
        while not stop.is_set():
            if self.cfg.remote:
                ship = asyncio.ensure_future(self._round(client_factory))
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait({ship, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not ship.done():
                    ship.cancel()  # safe at any point: the batch in flight is journaled
                with contextlib.suppress(asyncio.CancelledError):
                    await ship
            try:
                await asyncio.to_thread(self.enforce_cap)
            except OSError as exc:
                self.log.error("telemetry_cap_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.cfg.telemetry.interval_s)

    async def _round(self, client_factory: ClientFactory) -> None:
        try:
            async with client_factory() as client:
                await self.ship_once(client)
            self.last_error = None
        except Exception as exc:  # S3 down or refusing: nothing was deleted, retry next round
            self.last_error = _describe(exc)
            self.log.warning("telemetry_ship_failed", error=self.last_error)

    def status(self) -> dict[str, Any]:
        """Spool size, what shipped, what the cap dropped, and the last error (for /health)."""
        files = scan_spool(self.journal.root)
        st = self.journal.state
        pending = st.pending  # read once: a ship round in another thread may clear it
        return {
            "spool_files": len(files),
            "spool_bytes": sum(f.size for f in files),
            "shipped_objects": st.shipped_objects,
            "shipped_bytes": st.shipped_bytes,
            "last_shipped_at": st.last_shipped_at,
            "dropped_files": st.dropped_files,
            "dropped_bytes": st.dropped_bytes,
            "shipping": pending.key if pending else None,
            "last_error": self.last_error,
        }
