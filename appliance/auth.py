"""Bearer-token guards: 401 without a valid key, 403 without the scope the route needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from appliance.errors import ApiError
from appliance.services import Services
from store.keys import ApiKey

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> ApiKey:
    """The key behind the request's bearer token; ApiError 401 if there is none."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="fieldbox"'}
        )
    svc: Services = connection.app.state.svc
    key = svc.verifier.verify(token.strip())
    if key is None:
        raise ApiError(
            401, "invalid or revoked token", headers={"WWW-Authenticate": 'Bearer realm="fieldbox"'}
        )
    return key


def require(*scopes: str) -> Guard:
    """A guard that lets through keys holding any of `scopes`."""

    # Async on purpose: Litestar runs a sync guard in a worker thread, and the check is
    # one indexed read plus a sha256, cheaper than the thread hop.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        key = authenticate(connection)
        if not set(key.scopes) & set(scopes):
            raise ApiError(
                403, f"this key lacks the scope needed here (one of: {', '.join(scopes)})"
            )
        connection.state.api_key = key

    return guard


field_access = require("field", "admin")
