"""Bearer-token auth: 401 without a valid key, 403 without the scope the route needs."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection

from appliance.errors import ApiError
from appliance.services import Services
from store.keys import ApiKey


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


FIELD_ACCESS: dict[str, Any] = {"scopes": ("field", "admin")}
"""Route `opt` for the field API: `field` and `admin` keys may use it."""


async def authorize(request: Request[Any, Any, Any]) -> None:
    """App-wide before-request hook: enforce the scopes a route names in `opt["scopes"]`.

    A hook, not a Litestar guard: guards get a copy of the route handler on every call,
    which cost more than the whole key check (measured).
    """
    scopes: tuple[str, ...] | None = request.route_handler.opt.get("scopes")
    if not scopes:
        return
    key = authenticate(request)
    if not set(key.scopes) & set(scopes):
        raise ApiError(403, f"this key lacks the scope needed here (one of: {', '.join(scopes)})")
    request.state.api_key = key
