"""The tus 1.0.0 protocol pieces: headers, metadata, checksums, and the PATCH body loop."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import mimetypes
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from appliance.errors import ApiError
from appliance.partwriter import PartWriter
from store.errors import InvalidName
from store.mediatype import check_filename, check_header_text, check_media_type
from store.paths import check_id, check_label, check_sha256, is_decimal

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,expiration,checksum,termination"
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OCTETS = "application/offset+octet-stream"
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
# Where tus clients put the file's media type (Uppy: filetype); the first one given wins.
_TYPE_KEYS = ("filetype", "mime_type", "content_type")
# How often a quiet PATCH checks for a stall or a shutdown.
_POLL_S = 0.25


def tus_error(status: int, message: str, code: str | None = None) -> ApiError:
    """An ApiError that carries the Tus-Resumable header, as tus clients expect."""
    return ApiError(status, message, code=code, headers={"Tus-Resumable": TUS_VERSION})


def check_resumable(headers: Any) -> None:
    """412 unless the client speaks tus 1.0.0."""
    value = headers.get("tus-resumable")
    if value != TUS_VERSION:
        raise ApiError(
            412,
            f"Tus-Resumable: {TUS_VERSION} is required (got {value!r})",
            code="unsupported_tus_version",
            headers={"Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION},
        )


def expires_header(ts: float) -> str:
    """An RFC 7231 date for Upload-Expires."""
    return formatdate(ts, usegmt=True)


def parse_int_header(headers: Any, name: str) -> int:
    """A required non-negative integer header, or 400."""
    raw = headers.get(name)
    if raw is None:
        raise tus_error(400, f"{name} header is required")
    # ASCII digits only: `isdigit` also accepts '²', which int() then refuses.
    if not is_decimal(raw) or len(raw) > 19:
        raise tus_error(400, f"{name} must be a non-negative integer (got {raw!r})")
    return int(raw)


def parse_metadata(raw: str | None) -> dict[str, str]:
    """Decode `Upload-Metadata` (`key base64,key2 base64`), or 400."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(","):
        key, _, value = pair.strip().partition(" ")
        if not key or len(key) > 64 or not key.isascii() or " " in value.strip():
            raise tus_error(400, f"malformed Upload-Metadata entry {pair.strip()!r}")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise tus_error(400, f"Upload-Metadata value of {key!r} is not base64 UTF-8") from exc
        if len(out[key]) > 4096:
            raise tus_error(400, f"Upload-Metadata value of {key!r} is too long")
    if len(out) > 64:
        raise tus_error(400, "too many Upload-Metadata entries")
    return out


@dataclass(frozen=True)
class UploadMeta:
    """What fieldbox reads out of a tus upload's metadata."""

    location: str
    filename: str
    project: str | None
    kind: str
    mime_type: str
    sha256: str | None


def upload_meta(meta: dict[str, str]) -> UploadMeta:
    """Validate the metadata fieldbox needs; 400 naming the first problem."""
    if "location" not in meta:
        raise tus_error(400, "Upload-Metadata must carry 'location'")
    if not meta.get("filename"):
        raise tus_error(400, "Upload-Metadata must carry 'filename'")
    try:
        # Every value is stored with the asset, and some reach headers (Content-Type,
        # Content-Disposition, S3 metadata): no control character gets that far.
        types = [check_media_type(meta[k]) for k in _TYPE_KEYS if meta.get(k)]
        for key, value in meta.items():
            if key not in _TYPE_KEYS:
                check_header_text(f"Upload-Metadata value of {key!r}", value)
        location = check_id("location id", meta["location"])
        filename = check_filename(os.path.basename(meta["filename"].replace("\\", "/"))[:255])
        project = check_label("project", meta["project"]) if meta.get("project") else None
    except InvalidName as exc:
        raise tus_error(400, str(exc), code="invalid_name") from exc
    mime = types[0] if types else mimetypes.guess_type(filename)[0] or "application/octet-stream"
    kind = meta.get("kind") or _kind_of(mime)
    if not _KIND.match(kind):
        raise tus_error(400, f"invalid kind {kind!r}: lowercase letters, digits, '_' or '-'")
    sha = check_sha256(meta["sha256"].lower()) if meta.get("sha256") else None
    return UploadMeta(location, filename, project, kind, mime, sha)


def _kind_of(mime: str) -> str:
    if mime.startswith("video/"):
        return "video"
    if mime.startswith("image/"):
        return "image"
    return "document"


def parse_checksum(raw: str | None) -> tuple[str, bytes] | None:
    """Decode `Upload-Checksum: <algo> <base64>`; 400 for an unknown algorithm or bad digest."""
    if raw is None:
        return None
    algo, _, value = raw.strip().partition(" ")
    if algo not in CHECKSUM_ALGORITHMS:
        raise tus_error(
            400, f"unsupported checksum algorithm {algo!r} (use {', '.join(CHECKSUM_ALGORITHMS)})"
        )
    try:
        return algo, base64.b64decode(value.strip(), validate=True)
    except binascii.Error as exc:
        raise tus_error(400, "Upload-Checksum digest is not base64") from exc


@dataclass
class ChunkResult:
    """How a PATCH body ended: bytes kept, and whether the client sent all it announced."""

    received: int
    complete: bool


async def receive_into(
    receive: Any,
    writer: PartWriter,
    *,
    limit: int,
    stall_timeout: float,
    stopping: Callable[[], bool],
) -> ChunkResult:
    """Hand the request body to `writer` (at most `limit` bytes) as it arrives.

    Ends early, keeping what arrived, when the client disconnects, sends nothing for
    `stall_timeout` seconds, or the server is shutting down (`stopping()`). Raises 413
    when the body runs past `limit`.
    """
    received = 0
    complete = False
    loop = asyncio.get_running_loop()
    last_data = loop.time()
    while not stopping():
        wait = min(_POLL_S, max(last_data + stall_timeout - loop.time(), 0.0))
        try:
            async with asyncio.timeout(wait):
                message = await receive()
        except TimeoutError:
            if loop.time() - last_data >= stall_timeout:
                break
            continue
        if message["type"] == "http.disconnect":
            break
        body = message.get("body", b"")
        if body:
            last_data = loop.time()
            if received + len(body) > limit:
                raise tus_error(413, "PATCH body runs past the declared Upload-Length")
            await writer.feed(body)
            received += len(body)
        if not message.get("more_body", False):
            complete = True
            break
    return ChunkResult(received=received, complete=complete)
