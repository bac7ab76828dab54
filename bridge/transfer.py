"""What every blob upload is built from: CRC64NVME checksums, a request body that passes its
bytes through the throttle, S3 calls that cannot hang, and errors a person can read.

CRC64NVME is the one checksum: S3 checks it on every PutObject and UploadPart, combines part
checksums into a full-object one for multipart uploads, and returns it on HeadObject, so the
same value proves an upload arrived intact and that an existing object is ours.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from awscrt import checksums  # type: ignore[import-untyped]

from bridge.config import S3Config
from bridge.s3 import CredentialsError, S3Client
from bridge.throttle import Throttle

_READ_CHUNK = 8 * 1024 * 1024


class UploadError(Exception):
    """An upload failed; the message is for people, `remote` means the S3 target is unusable."""

    def __init__(self, message: str, *, remote: bool = False, bug: bool = False) -> None:
        super().__init__(message)
        self.remote = remote
        self.bug = bug


class LocalFileError(UploadError):
    """A blob on this box could not be read."""


def crc_b64(crc: int) -> str:
    """A CRC64NVME value the way S3 writes it: base64 of the 8 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(8, "big")).decode("ascii")


def crc_of(data: bytes) -> int:
    """CRC64NVME of bytes in memory."""
    return int(checksums.crc64nvme(data))


def read_range(path: Path, offset: int, length: int) -> tuple[bytes, int]:
    """`length` bytes of a file from `offset`, and their CRC64NVME (blocking: run in a thread)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, length, offset)
            while 0 < len(data) < length:  # one read stops short of 2 GiB
                more = os.pread(fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) != length:
        raise LocalFileError(f"{path} is shorter than its recorded size")
    return data, int(checksums.crc64nvme(data))


def file_crc(path: Path) -> int:
    """CRC64NVME of a whole file, read in large chunks into one buffer (blocking)."""
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    crc = 0
    try:
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(view):
                crc = int(checksums.crc64nvme(view[:n], crc))
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return crc


def combine(crc: int, part_crc: int, part_len: int) -> int:
    """The CRC64NVME of two byte runs end to end, from theirs."""
    return int(checksums.combine_crc64nvme(crc, part_crc, part_len))


class Body:
    """A request body over bytes in memory whose bytes go out through the throttle.

    aiohttp sends it as an async iterable; botocore sees a seekable file for the content
    length (and, on plain http, for signing). Between chunks it keeps the call's stall
    deadline moving, so a slow cap is not mistaken for a dead connection.
    """

    def __init__(self, data: bytes, throttle: Throttle, on_sent: Callable[[int], None]) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._throttle = throttle
        self._on_sent = on_sent
        self._deadline: tuple[asyncio.Timeout, float] | None = None

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int = -1) -> bytes:
        """File-style read (botocore reads to sign the payload on plain http)."""
        end = (
            len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        )
        out = self._view[self._pos : end].tobytes()
        self._pos = end
        return out

    def readinto(self, buf: memoryview | bytearray) -> int:
        """File-style readinto (the CRT signer prefers it: no bytes object per read)."""
        n = min(len(buf), len(self._view) - self._pos)
        buf[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        """File-style seek."""
        base = (0, self._pos, len(self._view))[whence]
        self._pos = max(0, min(len(self._view), base + offset))
        return self._pos

    def tell(self) -> int:
        """File-style tell."""
        return self._pos

    def watch(self, timeout: asyncio.Timeout, stall_s: float) -> None:
        """Move `timeout` forward whenever bytes leave, by `stall_s`."""
        self._deadline = (timeout, stall_s)

    def _push_deadline(self, pause: bool) -> None:
        if self._deadline is not None:
            timeout, stall_s = self._deadline
            when = None if pause else asyncio.get_running_loop().time() + stall_s
            timeout.reschedule(when)

    def __aiter__(self) -> AsyncIterator[memoryview]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[memoryview]:
        pos, total = 0, len(self._view)
        while pos < total:
            n = min(self._throttle.chunk_size(), total - pos)
            self._push_deadline(pause=True)  # waiting on our own cap is not a stall
            await self._throttle.acquire(n)
            self._push_deadline(pause=False)
            yield self._view[pos : pos + n]
            pos += n
            self._on_sent(n)
        self._push_deadline(pause=False)


class Calls:
    """S3 calls through one client, each bounded: no progress for the connect plus read
    timeout fails the call, whatever state the connection is in (half-open included)."""

    def __init__(self, client: S3Client, cfg: S3Config) -> None:
        self.client = client
        self.cfg = cfg
        self.stall_s = cfg.connect_timeout_s + cfg.read_timeout_s

    async def __call__(
        self, op: str, body: Body | None = None, stall_s: float | None = None, **params: Any
    ) -> dict[str, Any]:
        """Run `client.<op>(**params)` (with `Body=body` when given) under the stall limit."""
        limit = stall_s or self.stall_s
        if body is not None:
            params["Body"] = body
        try:
            async with asyncio.timeout(limit) as timeout:
                if body is not None:
                    body.watch(timeout, limit)
                result: dict[str, Any] = await getattr(self.client, op)(
                    Bucket=self.cfg.bucket, **params
                )
                return result
        except TimeoutError as exc:
            raise UploadError(
                f"S3 at {where(self.cfg)} stopped answering ({op}: nothing for "
                f"{limit:g}s; connection half-open or link down)",
                remote=True,
            ) from exc

    async def head(self, key: str) -> tuple[int, str | None] | None:
        """(size, CRC64NVME or None) of an object, or None when there is none."""
        try:
            r = await self("head_object", Key=key, ChecksumMode="ENABLED")
        except Exception as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            if code in ("403", "AccessDenied"):
                # S3 answers 403, not 404, for a missing key to keys without ListBucket.
                raise UploadError(
                    f"access denied by {where(self.cfg)} (HeadObject {code}): check the S3 "
                    "credentials; they need s3:ListBucket as well as s3:GetObject and "
                    "s3:PutObject",
                    remote=True,
                ) from exc
            raise
        return int(r["ContentLength"]), r.get("ChecksumCRC64NVME")


def where(cfg: S3Config) -> str:
    """The S3 target in words, for messages."""
    return f"{cfg.endpoint_url or 'AWS S3'} (bucket {cfg.bucket})"


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


_AUTH = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
_AUTH |= {"InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed"}


def readable(exc: BaseException, cfg: S3Config) -> UploadError:
    """The failure as an UploadError: a message naming the cause, and whether S3 is unusable."""
    if isinstance(exc, UploadError):
        return exc
    from botocore import exceptions as bce

    target = where(cfg)
    code, status = error_code(exc), _http_status(exc)
    if code:
        message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")).strip()
        if code == "NoSuchBucket":
            return UploadError(f"bucket {cfg.bucket!r} does not exist at {target}", remote=True)
        if code in _AUTH:
            return UploadError(
                f"access denied by {target} ({code}): check the S3 credentials", remote=True
            )
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return UploadError(
                f"S3 error at {target}: {status} {code} {message}".strip(), remote=True
            )
        return UploadError(f"S3 refused the request: {code} {message}".strip())
    if isinstance(exc, CredentialsError | bce.NoCredentialsError | bce.PartialCredentialsError):
        return UploadError(f"no usable S3 credentials: {exc}", remote=True)
    if isinstance(exc, bce.ConnectTimeoutError):
        return UploadError(f"cannot connect to S3 at {target}: timed out", remote=True)
    if isinstance(exc, bce.ReadTimeoutError):
        return UploadError(
            f"S3 at {target} stopped answering (no reply within {cfg.read_timeout_s:g}s; "
            "connection half-open or link down)",
            remote=True,
        )
    if isinstance(exc, bce.EndpointConnectionError):
        return UploadError(f"cannot connect to S3 at {target}: {_cause(exc)}", remote=True)
    if isinstance(exc, bce.HTTPClientError | ConnectionError | TimeoutError | OSError):
        return UploadError(f"connection to S3 at {target} failed: {_cause(exc)}", remote=True)
    if type(exc).__module__.startswith("aiohttp"):
        return UploadError(f"connection to S3 at {target} failed: {_cause(exc)}", remote=True)
    return UploadError(f"unexpected error: {type(exc).__name__}: {exc}", bug=True)


def _cause(exc: BaseException) -> str:
    inner = exc.__cause__ or exc.__context__
    text = str(inner) if inner is not None and str(inner) else str(exc)
    return text or type(exc).__name__
