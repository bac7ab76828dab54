"""One outbox row to S3: its blob (once, verified), its asset's metadata JSON, its row closed.

Order per row: HEAD the blob key (our size and CRC64NVME there: nothing to send) unless
the blob is under 1 MiB, where the conditional PUT itself is the cheaper existence check
(a large blob's CreateMultipartUpload goes out with that HEAD, and is aborted when the
bytes are there); then PutObject (small) or a multipart upload (large), both with
`IfNoneMatch: *`, so nothing already in S3 is ever overwritten, and carrying the asset's
metadata as object metadata (`x-amz-meta-*`); then the verifying HEAD (size and
CRC64NVME equal ours); then `mark_done`. When the blob was already there (another asset
with the same bytes), the asset's metadata goes to `assets/{asset_id}.json` beside it
instead. A row whose asset never came to be (a crash between the outbox row and the
asset row) still has its blob sent, without metadata; a row whose blob file is gone is
closed. Both get a note.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

from bridge import s3
from bridge.config import BridgeConfig
from bridge.multipart import Multipart
from bridge.throttle import Throttle
from bridge.transfer import (
    Body,
    Calls,
    UploadError,
    crc_b64,
    crc_of,
    error_code,
    file_crc,
    read_range,
)
from store import assets, blobs
from store.assets import Asset
from store.errors import NotFound
from store.locations import Locations
from store.outbox import Outbox, OutboxItem
from store.paths import Layout

log = structlog.get_logger("fieldbox.bridge")
# Blobs up to this size are read on the event loop: from the page cache that takes
# microseconds, less than handing the read to a thread.
_INLINE_READ = 256 * 1024
# Under this size a HEAD before the PUT costs S3 a request for less than it saves: the
# conditional PUT refuses to overwrite anyway, and resending that little is cheap.
_HEAD_FIRST = 1024 * 1024


@dataclass
class Sent:
    """How a blob got to S3, and whether S3's copy still has to be checked against ours."""

    outcome: str  # "uploaded" or "already there"
    crc: int
    verify: bool
    after_upload: bool = True


class BlobSender:
    """Sends rows for one pass: shares its slots (bodies in flight) and byte counters."""

    def __init__(
        self,
        cfg: BridgeConfig,
        layout: Layout,
        locs: Locations,
        outbox: Outbox,
        throttle: Throttle,
        slots: asyncio.Semaphore,
        sent: Callable[[int], None],
        skipped: Callable[[int], None],
        overhead: Callable[[int], None],
        asset_grace_s: float,
        ready: Callable[[Calls], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.ready = ready  # raises when the S3 server may not be uploaded to (s3probe.py)
        self.layout = layout
        self.locs = locs
        self.outbox = outbox
        self.throttle = throttle
        self.slots = slots
        self.sent = sent
        self.skipped = skipped
        self.overhead = overhead
        self.asset_grace_s = asset_grace_s
        self.multipart = Multipart(cfg, outbox, throttle, slots, sent, skipped)

    async def send(self, calls: Calls, item: OutboxItem) -> str:
        """Upload one row's blob and metadata and close the row; return what happened."""
        # Both reads are quick (a cached location, one indexed row in WAL mode, which a
        # writer never blocks): a thread hop would cost more than it saves.
        try:
            loc = self.locs.get(item.location)
        except NotFound:
            await self._close(item, f"location {item.location} no longer exists; nothing to upload")
            return "closed"
        key = s3.blob_key(self.cfg.s3, loc.account, loc.geo_prefix, loc.id, item.sha256)
        try:
            asset: Asset | None = assets.get(self.locs.db(loc.id), loc.id, item.asset_id)
        except NotFound:
            asset = None
            if time.time() - item.created_at < self.asset_grace_s:
                return "deferred"  # its asset row may still be on its way
        path = blobs.blob_path(self.layout, loc, item.sha256)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            await self.multipart.forget(calls, item.id, key, item.multipart_upload_id)
            log.error("blob_missing", item=item.id, asset=item.asset_id, path=str(path))
            await self._close(item, "blob file is gone from the box; nothing to upload")
            return "closed"
        meta = object_metadata(asset)
        if self.ready is not None:
            await self.ready(calls)
        if size >= self.cfg.upload.multipart_threshold_bytes:
            sent = await self._large(calls, item, path, key, size, meta)
        else:
            sent = await self._small(calls, path, key, size, meta)
        # The asset's metadata rode on the object when this upload created it; otherwise
        # (the bytes were already there) it gets a JSON of its own.
        json_needed = asset is not None and sent.outcome != "uploaded"
        async with asyncio.TaskGroup() as tg:
            if sent.verify:
                there = tg.create_task(calls.head(key))
            if asset is not None and json_needed:
                tg.create_task(self._put_metadata(calls, loc.account, loc.geo_prefix, asset, key))
        if sent.verify:
            same_or_raise(key, there.result(), size, sent.crc, sent.after_upload)
        if asset is not None:
            await asyncio.to_thread(self.outbox.mark_done, item.id, None)
        else:
            note = f"asset {item.asset_id} was never created; blob uploaded, no metadata"
            await self._close(item, note)
        log.info("blob_synced", key=key, size=size, outcome=sent.outcome, item=item.id)
        return sent.outcome

    async def _small(
        self, calls: Calls, path: Path, key: str, size: int, meta: dict[str, Any]
    ) -> Sent:
        if size < _HEAD_FIRST:
            (data, crc), there = read_range(path, 0, size), None
        elif size <= _INLINE_READ:
            (data, crc), there = read_range(path, 0, size), await calls.head(key)
        else:
            (data, crc), there = await asyncio.gather(
                asyncio.to_thread(read_range, path, 0, size), calls.head(key)
            )
        if there is not None:
            same_or_raise(key, there, size, crc, after_upload=False)
            self.skipped(size)
            return Sent("already there", crc, verify=False)
        async with self.slots:
            try:
                await calls(
                    "put_object",
                    body=Body(data, self.throttle, self.sent),
                    Key=key,
                    ContentLength=size,
                    ChecksumAlgorithm="CRC64NVME",
                    ChecksumCRC64NVME=crc_b64(crc),
                    IfNoneMatch="*",
                    **meta,
                )
            except Exception as exc:
                code = error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    return Sent("already there", crc, verify=True, after_upload=False)
                if not code:
                    await refusal_behind(calls, key)
                raise
        return Sent("uploaded", crc, verify=True)

    async def _large(
        self,
        calls: Calls,
        item: OutboxItem,
        path: Path,
        key: str,
        size: int,
        meta: dict[str, Any],
    ) -> Sent:
        upload_id, created = item.multipart_upload_id, None
        if upload_id is None:
            # The HEAD and the new upload go together: one round trip before the first part
            # instead of two. When S3 has the object already, the upload is aborted unused.
            async with asyncio.TaskGroup() as tg:
                head = tg.create_task(calls.head(key))
                start = tg.create_task(self.multipart.create(calls, item, key, meta))
            there, created = head.result(), start.result()
            upload_id = created
        else:
            there = await calls.head(key)
        if there is not None:
            crc = await asyncio.to_thread(file_crc, path)
            try:
                same_or_raise(key, there, size, crc, after_upload=False)
            finally:
                await self.multipart.forget(calls, item.id, key, upload_id)
            self.skipped(size)
            return Sent("already there", crc, verify=False)
        done = await self.multipart.send(calls, item, path, key, size, meta, created)
        if done.completed:
            return Sent("uploaded", done.crc, verify=True)
        return Sent("already there", done.crc, verify=True, after_upload=False)

    async def _put_metadata(
        self, calls: Calls, account: str, geo: str, asset: Asset, blob_key: str
    ) -> None:
        doc: dict[str, Any] = {
            "asset_id": asset.id,
            "location": asset.location,
            "account": account,
            "geo_prefix": geo,
            "project": asset.project,
            "kind": asset.kind,
            "filename": asset.filename,
            "mime_type": asset.mime_type,
            "size": asset.size,
            "sha256": asset.sha256,
            "created_at": asset.created_at,
            "metadata": asset.metadata,
            "blob_key": blob_key,
        }
        data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        key = s3.location_key(
            self.cfg.s3, account, geo, asset.location, "assets", f"{asset.id}.json"
        )
        # Not a blob, so it takes no slot; rewritten as it is on a retry: it only ever says
        # what the location DB says.
        await calls(
            "put_object",
            body=Body(data, self.throttle, self.overhead),
            Key=key,
            ContentLength=len(data),
            ContentType="application/json",
            ChecksumAlgorithm="CRC64NVME",
            ChecksumCRC64NVME=crc_b64(crc_of(data)),
        )

    async def _close(self, item: OutboxItem, note: str) -> None:
        await asyncio.to_thread(self.outbox.mark_done, item.id, note)
        log.warning("outbox_row_closed", item=item.id, asset=item.asset_id, note=note)


async def refusal_behind(calls: Calls, key: str) -> None:
    """Raise S3's refusal if that is what a small PUT's broken connection hid.

    Small PUTs do not wait for "100 Continue", so S3 may refuse one (bad keys, no access)
    before reading its body and close the connection, which can surface as a reset rather
    than the error. A HEAD of the same key answers the question: a refusal raises here
    as access denied; any other answer leaves the PUT's own error to stand.
    """
    try:
        await calls.head(key)
    except UploadError as exc:
        if exc.__cause__ is not None and error_code(exc.__cause__) in ("403", "AccessDenied"):
            raise
    except Exception:
        return


def object_metadata(asset: Asset | None) -> dict[str, Any]:
    """PutObject/CreateMultipartUpload arguments that carry the asset's metadata."""
    if asset is None:
        return {}
    # S3 user metadata is ASCII only: free text is percent-encoded.
    return {
        "ContentType": asset.mime_type,
        "Metadata": {
            "asset-id": asset.id,
            "location": asset.location,
            "kind": asset.kind,
            "filename": quote(asset.filename),
            "project": quote(asset.project or ""),
            "created-at": f"{asset.created_at:.3f}",
        },
    }


def same_or_raise(
    key: str, there: tuple[int, str | None] | None, size: int, crc: int, after_upload: bool
) -> None:
    """Accept S3's object at `key` only if its size and CRC64NVME are ours."""
    if there is None:
        raise UploadError(f"{key} is not in S3 after it was sent")
    their_size, their_crc = there
    if their_size == size and their_crc == crc_b64(crc):
        return
    what = f"size {their_size}, CRC64NVME {their_crc or 'none'}; ours: size {size}, {crc_b64(crc)}"
    if their_crc is None and not after_upload:
        raise UploadError(
            f"an object without a CRC64NVME checksum already exists at {key} ({what}); "
            "it cannot be shown to be ours, so it is not overwritten"
        )
    if after_upload:
        raise UploadError(f"S3 reports a different object at {key} after upload ({what})")
    raise UploadError(f"a different object already exists at {key} ({what}); not overwritten")
