"""Every error leaves as a JSON body `{"error", "message", "status"}` with a 4xx/5xx code."""

from __future__ import annotations

import sqlite3
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.committer import DatabaseBusy
from appliance.gateway_calls import GatewayFailed
from store.db import is_disk_full, is_locked
from store.errors import (
    ChecksumMismatch,
    Conflict,
    DiskFull,
    InvalidDocument,
    InvalidName,
    NotFound,
    PreconditionFailed,
    QueueFull,
    StoreError,
)

_STORE_STATUS: dict[type[StoreError], tuple[int, str]] = {
    DatabaseBusy: (503, "busy"),
    InvalidName: (400, "invalid_name"),
    InvalidDocument: (400, "invalid_document"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    PreconditionFailed: (412, "precondition_failed"),
    ChecksumMismatch: (460, "checksum_mismatch"),
    DiskFull: (507, "insufficient_storage"),
    QueueFull: (429, "too_many_requests"),
}

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    412: "precondition_failed",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    423: "locked",
    428: "precondition_required",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
    503: "unavailable",
}


class ApiError(HTTPException):
    """An HTTP error with a stable machine-readable code and optional extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=message, status_code=status, headers=headers)
        self.code = code or _CODES.get(status, "error")


def error_body(_path: str, status: int, message: str) -> dict[str, Any]:
    """The JSON error body of the api, for a status that has no more specific code."""
    return {"error": _CODES.get(status, "error"), "message": message, "status": status}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    """The JSON error body every failure uses."""
    return Response(
        {"error": code, "message": message, "status": status},
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _store_error(_: Request[Any, Any, Any], exc: StoreError) -> Response[Any]:
    status, code = next(
        (v for t, v in _STORE_STATUS.items() if isinstance(exc, t)), (400, "bad_request")
    )
    headers = {"Retry-After": "1"} if status == 503 else None
    if isinstance(exc, QueueFull):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_response(status, code, str(exc), headers)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    code = getattr(exc, "code", None) or _CODES.get(exc.status_code, "error")
    message = exc.detail
    if isinstance(exc, ValidationException) and exc.extra:
        message = f"{exc.detail}: {exc.extra}"
    headers = dict(exc.headers or {})
    return error_response(exc.status_code, code, str(message), headers)


TOO_DEEP = "JSON nested too deeply"


def _too_deep(_: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # Decoding deep JSON (msgspec's, Litestar's or the stdlib's) or walking it raises
    # RecursionError wherever that happens: the client's input, a 400, never a 500.
    return error_response(400, "invalid_document", f"{TOO_DEEP}: {exc}")


def _sqlite(request: Request[Any, Any, Any], exc: sqlite3.OperationalError) -> Response[Any]:
    # A write on a request thread that waited out busy_timeout behind another writer (a
    # backup, a checkpoint, the CLI) is the box being busy, not broken: the client retries.
    if is_locked(exc):
        return error_response(503, "busy", "the database is busy; retry", {"Retry-After": "1"})
    if is_disk_full(exc):
        return error_response(507, "insufficient_storage", "the box's disk is full")
    return _unexpected(request, exc)


def _gateway(_: Request[Any, Any, Any], exc: GatewayFailed) -> Response[Any]:
    # The model behind `ask` failed or is away: the box's upstream, not the client's input.
    codes = {502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}
    headers = {"Retry-After": "5"} if exc.status == 503 else {}
    return error_response(exc.status, codes.get(exc.status, "error"), exc.message, headers)


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    structlog.get_logger("fieldbox.http").exception("unhandled_error", error=repr(exc))
    return error_response(500, "internal", "internal error; see the box's logs for the request id")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    StoreError: _store_error,
    HTTPException: _http_error,
    RecursionError: _too_deep,
    sqlite3.OperationalError: _sqlite,
    GatewayFailed: _gateway,
    Exception: _unexpected,
}
