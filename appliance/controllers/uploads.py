"""`/v1/uploads`: resumable uploads over tus 1.0.0 (creation, expiration, checksum, termination)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, head, patch, post, route
from litestar.params import FromPath

from appliance import tus
from appliance.auth import FIELD_ACCESS
from appliance.errors import ApiError
from appliance.partwriter import PartWriter
from appliance.services import Services, Svc, in_thread
from store import ingest
from store.db import is_disk_full
from store.errors import Conflict, DiskFull, NotFound
from store.paths import is_decimal
from store.uploads import PartMissing, Upload


def _headers(up: Upload, **extra: str) -> dict[str, str]:
    headers = {
        "Tus-Resumable": tus.TUS_VERSION,
        "Upload-Offset": str(up.offset),
        "Upload-Expires": tus.expires_header(up.expires_at),
        "Cache-Control": "no-store",
        **extra,
    }
    if up.asset_id:
        headers["Fieldbox-Asset-Id"] = up.asset_id
    return headers


def _live(svc: Services, upload_id: str) -> Upload:
    try:
        up = svc.uploads.get(upload_id)
    except NotFound as exc:
        raise tus.tus_error(404, str(exc), "not_found") from exc
    expired = up.asset_id is None and not up.complete and up.expires_at < time.time()
    # A PATCH still receiving counts as moving: its new expiry lands when it commits.
    if expired and not svc.uploads.busy(up.id):
        raise tus.tus_error(410, f"upload {upload_id!r} expired", "gone")
    return up


def _after_moved(svc: Services, upload_id: str, missing: PartMissing) -> Upload:
    """The row behind an upload whose part file is gone: finished, or being finished (423)."""
    try:
        current = svc.uploads.get(upload_id)
    except NotFound as exc:
        raise tus.tus_error(404, str(exc), "not_found") from exc
    if current.complete and current.asset_id is None:
        # The lock's holder moved the file into the blob store and is creating the asset.
        raise tus.tus_error(423, f"upload {upload_id!r} is being finished", "locked")
    if not current.complete:
        raise tus.tus_error(404, str(missing), "not_found") from missing
    return current


class UploadController(Controller):
    """Stock tus clients (tuspy, tus-js-client, TUSKit) upload files here."""

    path = "/v1/uploads"
    tags = ["uploads"]

    # Litestar registers a controller's handlers in name order and adds its own OPTIONS
    # handler to a path that has none yet; this name sorts before `create` so ours is first.
    @route("/", http_method="OPTIONS", status_code=204, include_in_schema=False)
    async def capabilities(self, svc: Svc) -> Response[None]:
        """Server capabilities (no auth: it reveals nothing but the protocol)."""
        return Response(
            None,
            status_code=204,
            headers={
                "Tus-Resumable": tus.TUS_VERSION,
                "Tus-Version": tus.TUS_VERSION,
                "Tus-Extension": tus.EXTENSIONS,
                "Tus-Max-Size": str(svc.cfg.api.max_upload_bytes),
                "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUM_ALGORITHMS),
            },
        )

    @post("/", opt=FIELD_ACCESS, status_code=201)
    async def create(self, request: Request[Any, Any, Any], svc: Svc) -> Response[None]:
        """Start an upload; with a body (creation-with-upload) the first bytes land too."""
        tus.check_resumable(request.headers)
        if "upload-defer-length" in request.headers:
            raise tus.tus_error(400, "Upload-Defer-Length is not supported; send Upload-Length")
        length = tus.parse_int_header(request.headers, "upload-length")
        if length > svc.cfg.api.max_upload_bytes:
            raise tus.tus_error(
                413, f"Upload-Length is over Tus-Max-Size ({svc.cfg.api.max_upload_bytes})"
            )
        raw_meta = tus.parse_metadata(request.headers.get("upload-metadata"))
        meta = tus.upload_meta(raw_meta)
        await in_thread(svc.locations.get, meta.location)
        if await in_thread(svc.disk_low):
            raise DiskFull("the data disk is nearly full; upload refused")
        up = await in_thread(
            svc.uploads.create,
            length=length,
            location=meta.location,
            filename=meta.filename,
            project=meta.project,
            kind=meta.kind,
            mime_type=meta.mime_type,
            declared_sha256=meta.sha256,
            metadata=raw_meta,
            ttl_s=svc.cfg.api.upload_expiry_hours * 3600,
        )
        location = {"Location": f"/v1/uploads/{up.id}"}
        if request.headers.get("content-type") == tus.OCTETS:
            up = await _append(request, svc, up, 0)
        elif length == 0:
            up = await _finish(svc, up)
        return Response(None, status_code=201, headers=_headers(up, **location))

    @head("/{upload_id:str}", opt=FIELD_ACCESS)
    async def offset(
        self,
        request: Request[Any, Any, Any],
        upload_id: FromPath[str],
        svc: Svc,
    ) -> Response[None]:
        """How many bytes the box holds durably: resume from there."""
        tus.check_resumable(request.headers)
        up = _live(svc, upload_id)  # one indexed read: no thread hop
        return Response(
            None,
            headers=_headers(up, **{"Upload-Length": str(up.length)}),
        )

    @patch("/{upload_id:str}", opt=FIELD_ACCESS, status_code=204)
    async def append(
        self,
        request: Request[Any, Any, Any],
        upload_id: FromPath[str],
        svc: Svc,
    ) -> Response[None]:
        """Append bytes at Upload-Offset; the 204 means they are on disk."""
        tus.check_resumable(request.headers)
        if request.headers.get("content-type") != tus.OCTETS:
            raise tus.tus_error(415, f"Content-Type must be {tus.OCTETS}")
        offset = tus.parse_int_header(request.headers, "upload-offset")
        up = _live(svc, upload_id)  # one indexed read: no thread hop
        up = await _append(request, svc, up, offset)
        return Response(None, status_code=204, headers=_headers(up))

    @delete("/{upload_id:str}", opt=FIELD_ACCESS, status_code=204)
    async def terminate(
        self,
        request: Request[Any, Any, Any],
        upload_id: FromPath[str],
        svc: Svc,
    ) -> Response[None]:
        """Abandon an upload and free its bytes (an asset it already became stays)."""
        tus.check_resumable(request.headers)
        up = _live(svc, upload_id)  # one indexed read: no thread hop
        try:
            with svc.uploads.locked_part(up):
                svc.uploads.get(up.id)  # still there under the lock (404 if not)
                await in_thread(svc.uploads.delete, up.id)
        except PartMissing as exc:
            # Finished (the asset stays), or lost its data; 423 while being finished.
            _after_moved(svc, up.id, exc)
            await in_thread(svc.uploads.delete, up.id)
        except Conflict as exc:
            raise tus.tus_error(423, str(exc), "locked") from exc
        svc.upload_hashes.pop(up.id, None)
        return Response(None, status_code=204, headers={"Tus-Resumable": tus.TUS_VERSION})

    @get("/{upload_id:str}", opt=FIELD_ACCESS)
    async def status(self, upload_id: FromPath[str], svc: Svc) -> dict[str, Any]:
        """fieldbox's own view of an upload (offset, length, and the asset once done)."""
        up = _live(svc, upload_id)  # one indexed read: no thread hop
        return {
            "id": up.id,
            "offset": up.offset,
            "length": up.length,
            "location": up.location,
            "filename": up.filename,
            "expires_at": up.expires_at,
            "asset_id": up.asset_id,
        }


async def _append(
    request: Request[Any, Any, Any], svc: Services, up: Upload, offset: int
) -> Upload:
    """Receive one PATCH (or creation-with-upload) body at `offset`; finish at the last byte."""
    announced = request.headers.get("content-length")
    size = int(announced) if announced is not None and is_decimal(announced) else None
    if up.complete:
        if offset != up.offset:
            raise tus.tus_error(409, f"Upload-Offset {offset} does not match {up.offset}")
        if size != 0:
            raise tus.tus_error(413, "the upload already has all its bytes; nothing more fits")
        if up.asset_id:
            return up
    checksum = tus.parse_checksum(request.headers.get("upload-checksum"))
    if size is not None and offset + size > up.length:
        raise tus.tus_error(413, "PATCH body runs past the declared Upload-Length")
    try:
        # Receiving and finishing both happen under the upload's lock, so a DELETE, the
        # sweeper or a second PATCH meanwhile gets 423, never a half-finished upload.
        with svc.uploads.locked_session(up) as (fh, current):
            if offset != current.offset:
                raise tus.tus_error(409, f"Upload-Offset {offset} does not match {current.offset}")
            if not current.complete:
                current = await _receive(request, svc, current, fh, checksum)
            if current.complete and current.asset_id is None:
                current = await _finish(svc, current)
            return current
    except Conflict as exc:
        raise tus.tus_error(423, str(exc), "locked") from exc
    except PartMissing as exc:
        current = _after_moved(svc, up.id, exc)
        if offset != current.offset:
            raise tus.tus_error(
                409, f"Upload-Offset {offset} does not match {current.offset}"
            ) from exc
        if size != 0:
            raise tus.tus_error(
                413, "the upload already has all its bytes; nothing more fits"
            ) from exc
        return current


async def _receive(
    request: Request[Any, Any, Any],
    svc: Services,
    up: Upload,
    fh: Any,
    checksum: tuple[str, bytes] | None,
) -> Upload:
    """Receive, fsync and record one body; the session as it stands after it."""
    start = up.offset
    if checksum is not None:
        # Before any byte lands: after a power loss, recovery must not count this chunk's
        # bytes unless it was verified (store/upload_recovery.py).
        await in_thread(svc.uploads.mark_unverified, up.id, start)
    known = svc.upload_hashes.get(up.id)
    whole = (
        known[1].copy()
        if known and known[0] == start
        else (hashlib.sha256() if start == 0 else None)
    )
    chunk_hash = tus.CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
    writer = PartWriter(fh, [h for h in (whole, chunk_hash) if h is not None])
    result: tus.ChunkResult | None = None
    expires: float | None = None

    def record() -> float | None:
        # On the writer's thread, right after its fsync: no second hop for the commit.
        assert result is not None
        if result.received == 0:
            return None
        if chunk_hash is not None and (
            not result.complete or checksum is None or chunk_hash.digest() != checksum[1]
        ):
            return None  # rejected below: the bytes are cut off, the offset stays
        new = start + result.received
        # The fsynced part file holds the bytes; the row needs no fsync of its own, except
        # to clear a checksum PATCH's durable mark (store/upload_recovery.py).
        return svc.uploads.commit_offset(up.id, start, new, durable=chunk_hash is not None)

    try:
        try:
            result = await tus.receive_into(
                request.receive,
                writer,
                limit=up.length - start,
                stall_timeout=svc.cfg.api.upload_stall_timeout_s,
                stopping=svc.stopping.is_set,
            )
        finally:
            # Every queued byte written and fsynced, then the offset recorded; or the error.
            expires = await writer.finish(record if result is not None else None)
    except OSError as exc:
        _rewind(fh, start)
        if is_disk_full(exc):
            raise DiskFull("no space left on the data disk; this chunk was not kept") from exc
        raise
    except ApiError:
        _rewind(fh, start)
        raise
    assert result is not None  # receive_into returned
    if (
        chunk_hash is not None
        and checksum is not None
        and (not result.complete or chunk_hash.digest() != checksum[1])
    ):
        _rewind(fh, start)
        raise tus.tus_error(
            460,
            f"Upload-Checksum ({checksum[0]}) does not match; chunk discarded",
            "checksum_mismatch",
        )
    new = start + result.received
    if whole is not None:
        svc.upload_hashes[up.id] = (new, whole)
    else:
        svc.upload_hashes.pop(up.id, None)
    if expires is None:
        return up
    svc.metrics.upload_bytes.inc(result.received)
    return msgspec.structs.replace(up, offset=new, expires_at=expires)


def _rewind(fh: Any, offset: int) -> None:
    fh.truncate(offset)
    fh.seek(offset)


async def _finish(svc: Services, up: Upload) -> Upload:
    # Called with the upload's lock held, or (an empty upload) before anyone knows its id.
    known = svc.upload_hashes.pop(up.id, None)
    digest = known[1].hexdigest() if known and known[0] == up.length else None
    asset = await in_thread(
        ingest.finalize,
        svc.layout,
        svc.locations,
        svc.uploads,
        svc.outbox,
        up,
        digest,
        on_created=svc.on_asset_created,
    )
    svc.metrics.uploads_completed.inc()
    # Not re-read: a DELETE may remove the finished row the moment the lock's file moves,
    # and the PATCH that made the asset must still answer with its id.
    return msgspec.structs.replace(up, asset_id=asset.id, offset=up.length)
