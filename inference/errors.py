"""Errors in the caller's dialect: OpenAI's `{"error": {...}}` or Ollama's `{"error": "..."}`."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from inference.access import Denied
from inference.backends.base import BackendError
from inference.limits import Deferred, Saturated
from inference.router import NoTarget, UnknownModel
from inference.translate import TranslationError
from inference.validation import RequestError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def is_ollama(path: str) -> bool:
    """Requests under /api/ speak Ollama's dialect."""
    return path.startswith("/api/")


def error_body(
    path: str, status: int, message: str, param: str | None = None, code: str | None = None
) -> Any:
    """The error body a client of this path's dialect expects."""
    if is_ollama(path):
        return {"error": message}
    if code is None and status == 404 and "model" in message:
        code = "model_not_found"
    kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    path: str,
    status: int,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    code: str | None = None,
) -> Response[Any]:
    """A JSON error response in the dialect of `path`."""
    return Response(
        error_body(path, status, message, param, code),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


Failure = tuple[int, str, str | None, dict[str, str] | None]
"""An exception as an answer: status, message, the field it names, extra headers."""

DEFERRED = "deferred"
"""The OpenAI error `code` of a background call put off while chats run (`Deferred`)."""


def failure_of(exc: Exception) -> Failure:
    """What the client is told about `exc`; an unexpected one is logged and becomes a 500."""
    if isinstance(exc, RequestError):
        return exc.status, exc.message, exc.param, None
    if isinstance(exc, TranslationError):
        return 400, str(exc), None, None
    if isinstance(exc, UnknownModel):
        return 404, str(exc), "model", None
    if isinstance(exc, Saturated):
        return 429, str(exc), None, {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, Deferred):
        return 503, str(exc), None, {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, NoTarget):
        return exc.status, str(exc), None, {"Retry-After": "5"} if exc.status == 503 else None
    if isinstance(exc, BackendError):
        return exc.status, exc.message, None, None
    if isinstance(exc, Denied):
        headers = (
            {"WWW-Authenticate": 'Bearer realm="fieldbox-gateway"'} if exc.status == 401 else None
        )
        return exc.status, exc.message, None, headers
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), None, exc.headers
    if isinstance(exc, RecursionError):
        # Deep JSON that got past decoding (or a walk of it) is the caller's input: a 400.
        return 400, f"JSON nested too deeply: {exc}", None, None
    structlog.get_logger("fieldbox.gateway").exception("unhandled_error", error=type(exc).__name__)
    return 500, "internal error; see the box's logs for the request id", None, None


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, message, param, headers = failure_of(exc)
    code = DEFERRED if isinstance(exc, Deferred) else None
    return error_response(request.url.path, status, message, param, headers, code)


EXCEPTION_HANDLERS: dict[Any, Any] = {Exception: _handle}
