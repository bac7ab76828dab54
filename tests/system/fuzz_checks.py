"""Schemathesis checks of fieldbox's own rules, loaded by `schemathesis run` as a hooks module.

`tests/system/test_fuzz.py` runs the schemathesis CLI with `SCHEMATHESIS_HOOKS` naming this
module and `FIELDBOX_FUZZ_DIALECT` saying which app answers (`api` or `gateway`), so that
every response is also checked for what the built-in checks do not know:

- every error (4xx/5xx) is JSON in its app's dialect: the api's `{"error","message","status"}`
  with `status` equal to the HTTP status, the gateway's OpenAI `{"error": {"message","type"}}`
  or, under `/api/`, Ollama's `{"error": "..."}`;
- every response carries `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis


def _header(response: schemathesis.Response, name: str) -> str | None:
    values = response.headers.get(name.lower())
    return values[0] if values else None


def _shape_problem(dialect: str, path: str, status: int, body: Any) -> str | None:
    """What is wrong with an error body, or None when it has its app's shape."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if dialect == "api":
        if not isinstance(body.get("error"), str) or not isinstance(body.get("message"), str):
            return 'the body lacks string "error" and "message"'
        if body.get("status") != status:
            return f'"status" is {body.get("status")!r}, the response is {status}'
        return None
    error = body.get("error")
    if path.startswith("/api/"):
        return None if isinstance(error, str) else 'Ollama\'s "error" must be a string'
    if not isinstance(error, dict):
        return 'OpenAI\'s "error" must be an object'
    if not isinstance(error.get("message"), str) or not isinstance(error.get("type"), str):
        return 'OpenAI\'s "error" lacks string "message" and "type"'
    return None


@schemathesis.check
def error_is_app_json(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """Every 4xx/5xx body is JSON with the app's error shape (HEAD answers carry no body)."""
    if response.status_code < 400 or case.method.upper() == "HEAD":
        return None
    media = (_header(response, "content-type") or "").split(";")[0].strip()
    if media != "application/json":
        raise AssertionError(f"{response.status_code} error with Content-Type {media!r}")
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} error body is not JSON: {exc}") from None
    dialect = os.environ.get("FIELDBOX_FUZZ_DIALECT", "api")
    problem = _shape_problem(dialect, case.path, response.status_code, body)
    if problem is not None:
        raise AssertionError(f"{response.status_code} error body: {problem}: {body!r:.300}")
    return None


@schemathesis.check
def sends_nosniff(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """Every response forbids MIME sniffing."""
    if (_header(response, "x-content-type-options") or "").lower() != "nosniff":
        raise AssertionError("X-Content-Type-Options: nosniff is missing")
    return None
