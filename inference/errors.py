"""Errors in the caller's dialect: OpenAI's `{"error": {...}}` or Ollama's `{"error": "..."}`."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from inference.access import Denied
from inference.backends.base import BackendError
from inference.limits import Saturated
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


def error_body(path: str, status: int, message: str, param: str | None = None) -> Any:
    """The error body a client of this path's dialect expects."""
    if is_ollama(path):
        return {"error": message}
    code = "model_not_found" if status == 404 and "model" in message else None
    kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    path: str,
    status: int,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """A JSON error response in the dialect of `path`."""
    return Response(
        error_body(path, status, message, param),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    path = request.url.path
    if isinstance(exc, RequestError):
        return error_response(path, exc.status, exc.message, exc.param)
    if isinstance(exc, TranslationError):
        return error_response(path, 400, str(exc))
    if isinstance(exc, UnknownModel):
        return error_response(path, 404, str(exc), "model")
    if isinstance(exc, Saturated):
        return error_response(path, 429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, NoTarget):
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        return error_response(path, exc.status, str(exc), headers=headers)
    if isinstance(exc, BackendError):
        return error_response(path, exc.status, exc.message)
    if isinstance(exc, Denied):
        headers = (
            {"WWW-Authenticate": 'Bearer realm="fieldbox-gateway"'} if exc.status == 401 else None
        )
        return error_response(path, exc.status, exc.message, headers=headers)
    if isinstance(exc, HTTPException):
        return error_response(path, exc.status_code, str(exc.detail), headers=exc.headers)
    if isinstance(exc, RecursionError):
        # Deep JSON that got past decoding (or a walk of it) is the caller's input: a 400.
        return error_response(path, 400, f"JSON nested too deeply: {exc}")
    structlog.get_logger("fieldbox.gateway").exception("unhandled_error", error=type(exc).__name__)
    return error_response(path, 500, "internal error; see the box's logs for the request id")


EXCEPTION_HANDLERS: dict[Any, Any] = {Exception: _handle}
