"""Multipart uploads of large blobs: created once, remembered in the outbox, resumed after a
restart, completed with a full-object CRC64NVME, and never left behind.

The UploadId is stored in the outbox row right after CreateMultipartUpload, so a crash at
any point leaves either nothing in S3 or an upload the next run finds: it lists the parts,
keeps those whose size and checksum match ours (S3 reports part checksums; an upload that
reports none has every part sent again), sends the rest, and completes with
`IfNoneMatch: *`, so an object that appeared meanwhile is never overwritten.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bridge import s3
from bridge.config import BridgeConfig
from bridge.throttle import Throttle
from bridge.transfer import Body, Calls, UploadError, combine, crc_b64, error_code, read_range
from store.locations import Locations
from store.outbox import Outbox, OutboxItem

MAX_PARTS = 10_000
MIB = 1024 * 1024
_GONE = ("NoSuchUpload", "404")
_START_OVER = ("InvalidPart", "InvalidPartOrder", "EntityTooSmall", "BadDigest", "InvalidRequest")
_BLOB_KEY = re.compile(r"^(?P<loc>.+)/blobs/[0-9a-f]{64}$")

log = structlog.get_logger("fieldbox.bridge")


def plan_parts(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """(part number, offset, length) for each part; parts grow to stay within 10,000."""
    if size > part_size * MAX_PARTS:
        part_size = math.ceil(size / MAX_PARTS / MIB) * MIB
    return [
        (i + 1, off, min(part_size, size - off)) for i, off in enumerate(range(0, size, part_size))
    ]


def reusable(listed: dict[str, Any] | None, length: int, crc: str) -> bool:
    """True when a part S3 already holds is the one we would send (same size and checksum)."""
    return (
        listed is not None
        and int(listed.get("Size", -1)) == length
        and listed.get("ChecksumCRC64NVME") == crc
    )


class _NotOurs(Exception):
    """The stored upload was started with another checksum algorithm."""


@dataclass
class Sent:
    """What a multipart upload ended with."""

    crc: int
    completed: bool  # False: S3 already had an object at the key (412); the caller compares


class Multipart:
    """Sends one large blob as a multipart upload, resuming the one its outbox row names."""

    def __init__(
        self,
        cfg: BridgeConfig,
        outbox: Outbox,
        throttle: Throttle,
        slots: asyncio.Semaphore,
        on_sent: Callable[[int], None],
        on_skipped: Callable[[int], None],
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.throttle = throttle
        self.slots = slots
        self.on_sent = on_sent
        self.on_skipped = on_skipped

    async def forget(self, calls: Calls, item_id: int, key: str, upload_id: str | None) -> None:
        """Abort an upload we will not complete and clear it from the row."""
        if upload_id is None:
            return
        try:
            await calls("abort_multipart_upload", Key=key, UploadId=upload_id)
        except Exception as exc:
            if error_code(exc) not in _GONE:
                raise
        await asyncio.to_thread(self.outbox.set_multipart, item_id, None)
        log.info("multipart_aborted", key=key, upload_id=upload_id)

    async def create(
        self, calls: Calls, item: OutboxItem, key: str, meta: dict[str, Any] | None = None
    ) -> str:
        """Start a multipart upload for `key` and store its id in the row (to resume it)."""
        created = await calls(
            "create_multipart_upload",
            Key=key,
            ChecksumAlgorithm="CRC64NVME",
            ChecksumType="FULL_OBJECT",
            **(meta or {}),
        )
        upload_id = str(created["UploadId"])
        await asyncio.to_thread(self.outbox.set_multipart, item.id, upload_id)
        return upload_id

    async def send(
        self,
        calls: Calls,
        item: OutboxItem,
        path: Path,
        key: str,
        size: int,
        meta: dict[str, Any] | None = None,
        created: str | None = None,
    ) -> Sent:
        """Upload `path` to `key` in parts; return its full-object CRC64NVME.

        `created`: an upload `create` just started for this row (nothing to resume).
        """
        upload_id = created or item.multipart_upload_id
        listed: dict[int, dict[str, Any]] = {}
        if upload_id is not None and created is None:
            try:
                listed = await self._list_parts(calls, key, upload_id)
                log.info("multipart_resumed", key=key, upload_id=upload_id, parts=len(listed))
            except _NotOurs:
                await self.forget(calls, item.id, key, upload_id)  # another algorithm: redo
                upload_id = None
            except Exception as exc:
                if error_code(exc) not in _GONE:
                    raise
                log.info("multipart_gone", key=key, upload_id=upload_id)
                await asyncio.to_thread(self.outbox.set_multipart, item.id, None)
                upload_id = None
        if upload_id is None:
            upload_id = await self.create(calls, item, key, meta)
        parts = plan_parts(size, self.cfg.upload.part_size_bytes)
        done: dict[int, tuple[str, int, int]] = {}  # number -> (etag, crc, length)

        async def one(number: int, offset: int, length: int) -> None:
            async with self.slots:
                data, crc = await asyncio.to_thread(read_range, path, offset, length)
                have = listed.get(number)
                if reusable(have, length, crc_b64(crc)):
                    assert have is not None
                    done[number] = (str(have["ETag"]), crc, length)
                    self.on_skipped(length)
                    return
                r = await calls(
                    "upload_part",
                    body=Body(data, self.throttle, self.on_sent),
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    ContentLength=length,
                    ChecksumAlgorithm="CRC64NVME",
                    ChecksumCRC64NVME=crc_b64(crc),
                )
                done[number] = (str(r["ETag"]), crc, length)

        try:
            async with asyncio.TaskGroup() as tg:
                for number, offset, length in parts:
                    tg.create_task(one(number, offset, length))
        except BaseExceptionGroup as group:
            first = _first(group)
            if error_code(first) in _GONE:
                await asyncio.to_thread(self.outbox.set_multipart, item.id, None)
                raise UploadError(
                    f"multipart upload of {key} vanished from S3; starting over"
                ) from first
            raise first from None
        full = 0
        for number, _, _ in parts:
            full = combine(full, done[number][1], done[number][2])
        return await self._complete(calls, item, key, upload_id, parts, done, full, size)

    async def _complete(
        self,
        calls: Calls,
        item: OutboxItem,
        key: str,
        upload_id: str,
        parts: list[tuple[int, int, int]],
        done: dict[int, tuple[str, int, int]],
        full: int,
        size: int,
    ) -> Sent:
        listing = [
            {"PartNumber": n, "ETag": done[n][0], "ChecksumCRC64NVME": crc_b64(done[n][1])}
            for n, _, _ in parts
        ]
        try:
            await calls(
                "complete_multipart_upload",
                # S3 may take minutes to assemble a large object; it keeps the connection
                # alive meanwhile, and the client's read timeout still catches a dead one.
                stall_s=max(calls.stall_s, 900.0),
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listing},
                ChecksumCRC64NVME=crc_b64(full),
                ChecksumType="FULL_OBJECT",
                MpuObjectSize=size,
                IfNoneMatch="*",
            )
        except Exception as exc:
            code = error_code(exc)
            if code in ("PreconditionFailed", "412"):
                await self.forget(calls, item.id, key, upload_id)
                return Sent(full, completed=False)
            if code in _GONE:
                # Completed by an earlier run that died before its row was closed, or by
                # another process: the caller's HEAD tells which.
                await asyncio.to_thread(self.outbox.set_multipart, item.id, None)
                return Sent(full, completed=False)
            if code in _START_OVER:
                await self.forget(calls, item.id, key, upload_id)
            raise
        return Sent(full, completed=True)

    async def _list_parts(
        self, calls: Calls, key: str, upload_id: str
    ) -> dict[int, dict[str, Any]]:
        parts: dict[int, dict[str, Any]] = {}
        marker = 0
        while True:
            page = await calls("list_parts", Key=key, UploadId=upload_id, PartNumberMarker=marker)
            algorithm = page.get("ChecksumAlgorithm")
            if algorithm and algorithm != "CRC64NVME":
                raise _NotOurs(algorithm)
            for p in page.get("Parts", []):
                parts[int(p["PartNumber"])] = p
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])


async def sweep_orphans(calls: Calls, cfg: BridgeConfig, locs: Locations, outbox: Outbox) -> int:
    """Abort multipart uploads under this box's blob keys that no outbox row refers to."""
    ours = {
        s3.location_key(cfg.s3, loc.account, loc.geo_prefix, loc.id)
        for loc in await asyncio.to_thread(locs.list)
    }
    prefix = s3.key(cfg.s3)
    found: list[tuple[str, str]] = []
    params: dict[str, Any] = {"Prefix": f"{prefix}/" if prefix else ""}
    while True:
        page = await calls("list_multipart_uploads", **params)
        for up in page.get("Uploads", []):
            m = _BLOB_KEY.match(str(up["Key"]))
            if m and m["loc"] in ours:
                found.append((str(up["Key"]), str(up["UploadId"])))
        if not page.get("IsTruncated"):
            break
        params["KeyMarker"] = page.get("NextKeyMarker", "")
        params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
    if not found:
        return 0
    # Read the rows after listing: an upload another process created while we listed has
    # had its id stored by now.
    referenced = {
        i.multipart_upload_id
        for i in await asyncio.to_thread(outbox.pending)
        if i.multipart_upload_id
    }
    aborted = 0
    for key, upload_id in found:
        if upload_id in referenced:
            continue
        try:
            await calls("abort_multipart_upload", Key=key, UploadId=upload_id)
            aborted += 1
            log.info("multipart_orphan_aborted", key=key, upload_id=upload_id)
        except Exception as exc:
            if error_code(exc) not in _GONE:
                raise
    return aborted


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
