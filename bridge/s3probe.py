"""The check an S3 server passes before the bridge uploads to it: does it do what the
bridge's guarantees rest on?

The bridge never overwrites an object (conditional writes, `If-None-Match: *`, on PutObject
and CompleteMultipartUpload) and marks a blob done only when S3 reports our CRC64NVME for
it (on single PUTs and, as a full-object checksum, on multipart uploads). A server that
ignores the condition or returns no CRC64NVME would make both promises silently false, so
before the first blob of a run the uploader writes a few small objects under
`{prefix}/{box_id}/s3-check/` and looks at what the server did with them. Anything
required that is missing holds every upload back, with an error naming the missing
feature on each row tried, in the uploader's status and in `/health`. What is only worth
knowing (the server stores a body whose checksum does not match) becomes a note.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge import s3
from bridge.blobsend import refusal_behind
from bridge.config import S3Config
from bridge.transfer import Calls, UploadError, crc_b64, crc_of, error_code, readable, where

log = structlog.get_logger("fieldbox.bridge")
_CONDITION_FAILED = ("PreconditionFailed", "412")
_BAD_CHECKSUM = ("BadDigest", "InvalidRequest", "XAmzContentChecksumMismatch", "InvalidDigest")


@dataclass
class ServerCheck:
    """What the check found: required features missing (uploads held) and notes."""

    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked_at: float = field(default_factory=time.time)

    def status(self) -> dict[str, Any]:
        """The check as `/health` shows it."""
        return {
            "ok": not self.missing,
            "missing": self.missing,
            "notes": self.notes,
            "checked_at": self.checked_at,
        }


class ServerLacks(UploadError):
    """The S3 server lacks something the bridge needs: nothing is uploaded to it."""


def lacking(cfg: S3Config, check: ServerCheck) -> ServerLacks:
    """The error every held row and the status carry, naming what is missing."""
    return ServerLacks(
        f"S3 server at {where(cfg)} lacks what the bridge needs: "
        + "; ".join(check.missing)
        + ". Uploads are held until it does (docs/bridge.md, "
        "'What the bridge needs from an S3 server')",
        remote=True,
    )


async def check_server(calls: Calls, cfg: S3Config) -> ServerCheck:
    """Write, overwrite-try, read back and delete a few small objects; report what is missing.

    An error that says S3 is unreachable or refuses our keys is raised as usual (the check
    runs again on the next pass); an S3 refusal of one of the requests themselves counts as
    the feature missing, with S3's own words.
    """
    base = s3.key(cfg, s3.box_id(cfg), "s3-check", secrets.token_hex(8))
    check = ServerCheck()
    first, second = f"fieldbox check {base} 1".encode(), f"fieldbox check {base} 2".encode()
    put_key, mp_key, bad_key = f"{base}/put", f"{base}/multipart", f"{base}/bad-checksum"
    # On an error that ends the check early nothing is cleaned up: the link is likely down.
    await _checked_writes(calls, cfg, check, put_key, mp_key, first, second)
    await _refuses_bad_checksums(calls, cfg, check, bad_key)
    await _clean_up(calls, cfg, (put_key, mp_key, bad_key))
    check.checked_at = time.time()
    return check


async def _checked_writes(
    calls: Calls, cfg: S3Config, check: ServerCheck, put_key: str, mp_key: str,
    first: bytes, second: bytes,
) -> None:  # fmt: skip
    refusal = await _try_put(calls, cfg, put_key, first)
    if refusal:
        check.missing.append(f"PutObject with CRC64NVME and If-None-Match: * (refused: {refusal})")
        return
    refusal = await _try_put(calls, cfg, put_key, second)
    kept = first
    if refusal is None:
        kept = second
        check.missing.append(
            "conditional PutObject (If-None-Match: *): it overwrote an existing object"
        )
    elif not refusal.startswith(_CONDITION_FAILED):
        check.missing.append(f"conditional PutObject (If-None-Match: *): answered {refusal}")
    _compare(check, "a PutObject", await calls.head(put_key), kept)

    refusal = await _try_multipart(calls, mp_key, first)
    if refusal is None:
        _compare(check, "a multipart upload", await calls.head(mp_key), first)
    else:
        check.missing.append(f"full-object CRC64NVME multipart uploads (refused: {refusal})")
    # An existing key again: CompleteMultipartUpload must refuse to replace it.
    refusal = await _try_multipart(calls, put_key, second)
    if refusal is None:
        check.missing.append(
            "conditional CompleteMultipartUpload (If-None-Match: *): it overwrote an "
            "existing object"
        )
    elif not refusal.startswith(_CONDITION_FAILED):
        check.missing.append(
            f"conditional CompleteMultipartUpload (If-None-Match: *): answered {refusal}"
        )


async def _refuses_bad_checksums(calls: Calls, cfg: S3Config, check: ServerCheck, key: str) -> None:
    refusal = await _try_put(calls, cfg, key, b"checksum check", crc_of(b"not these bytes"))
    if refusal is None:
        check.notes.append(
            "it stores a body whose CRC64NVME does not match (no check on upload): a blob "
            "damaged on the way is caught by the verifying HEAD, but then blocks its key "
            "(never overwritten) until it is removed by hand"
        )
    elif not refusal.startswith(_BAD_CHECKSUM):
        check.notes.append(f"a body with a wrong CRC64NVME was refused with {refusal}")


def _compare(
    check: ServerCheck, what: str, there: tuple[int, str | None] | None, data: bytes
) -> None:
    if there is None:
        check.missing.append(f"read-after-write: {what} was not there right after it was stored")
    elif there[1] is None:
        check.missing.append(f"CRC64NVME on HeadObject (ChecksumMode=ENABLED) for {what}")
    elif there != (len(data), crc_b64(crc_of(data))):
        check.missing.append(
            f"CRC64NVME on HeadObject for {what}: it reported size {there[0]}, {there[1]}; "
            f"stored: size {len(data)}, {crc_b64(crc_of(data))}"
        )


async def _try_put(
    calls: Calls, cfg: S3Config, key: str, data: bytes, crc: int | None = None
) -> str | None:
    """None when the conditional PutObject was stored, else S3's refusal ('Code message')."""
    try:
        await calls(
            "put_object", Key=key, Body=data, ContentLength=len(data),
            ChecksumAlgorithm="CRC64NVME",
            ChecksumCRC64NVME=crc_b64(crc_of(data) if crc is None else crc), IfNoneMatch="*",
        )  # fmt: skip
    except Exception as exc:
        if not error_code(exc):
            # A small PUT's refusal can arrive as a reset connection: a HEAD tells.
            await refusal_behind(calls, key)
        return _refusal(exc, cfg)
    return None


async def _try_multipart(calls: Calls, key: str, data: bytes) -> str | None:
    """One-part FULL_OBJECT CRC64NVME upload completed with If-None-Match: *; None when it
    completed, else S3's refusal ('Code message'). An upload left open is aborted."""
    try:
        created = await calls(
            "create_multipart_upload", Key=key, ChecksumAlgorithm="CRC64NVME",
            ChecksumType="FULL_OBJECT",
        )  # fmt: skip
    except Exception as exc:
        return _refusal(exc, calls.cfg)
    upload_id = str(created["UploadId"])
    crc = crc_b64(crc_of(data))
    try:
        part = await calls(
            "upload_part", Key=key, UploadId=upload_id, PartNumber=1, Body=data,
            ContentLength=len(data), ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=crc,
        )  # fmt: skip
        listing = [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumCRC64NVME": crc}]
        await calls(
            "complete_multipart_upload", Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": listing}, ChecksumCRC64NVME=crc,
            ChecksumType="FULL_OBJECT", MpuObjectSize=len(data), IfNoneMatch="*",
        )  # fmt: skip
    except Exception as exc:
        refusal = _refusal(exc, calls.cfg)
        try:
            await calls("abort_multipart_upload", Key=key, UploadId=upload_id)
        except Exception as gone:
            if error_code(gone) not in ("NoSuchUpload", "404"):
                raise
        return refusal
    return None


def _refusal(exc: BaseException, cfg: S3Config) -> str:
    """S3's refusal of one request as 'Code message'; anything that says S3 is unusable
    (unreachable, our keys refused, no bucket, 5xx) is raised instead."""
    err = readable(exc, cfg)
    if err.remote or not error_code(exc):
        raise err from exc
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")).strip()
    return f"{error_code(exc)} {message}".strip()


async def _clean_up(calls: Calls, cfg: S3Config, keys: tuple[str, ...]) -> None:
    # Keys without s3:DeleteObject leave the check's objects behind: say so, nothing more.
    for key in keys:
        try:
            await calls("delete_object", Key=key)
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey"):
                continue
            log.warning("s3_check_cleanup_failed", key=key, error=str(readable(exc, cfg)))
            return
