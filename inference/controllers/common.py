"""What both dialects' controllers need: the gateway, the caller, a checked request body."""

from __future__ import annotations

from typing import Any

from litestar import Request

from inference.access import Caller
from inference.backends.base import Json
from inference.config import GatewayConfig
from inference.service import Call, Gateway
from inference.validation import check_forbidden, decode_body, schema_of

GATEWAY_ROUTE: dict[str, Any] = {"gateway": True}
"""Route `opt` of every model route: the access rules apply."""


def gateway_of(request: Request[Any, Any, Any]) -> Gateway:
    """The app's gateway service."""
    gateway: Gateway = request.app.state.gateway
    return gateway


def config_of(request: Request[Any, Any, Any]) -> GatewayConfig:
    """The `[gateway]` config."""
    cfg: GatewayConfig = request.app.state.config
    return cfg


async def body_of(request: Request[Any, Any, Any]) -> Json:
    """The request's JSON object (RequestError if it is not one, or names an upstream).

    Checked before any dialect translation, which would drop unknown fields silently.
    """
    body = decode_body(await request.body())
    check_forbidden(body)
    return body


def new_call(request: Request[Any, Any, Any], endpoint: str, dialect: str, body: Json) -> Call:
    """A Call for this request, with the caller the access hook found."""
    call = call_for(request.state.caller, endpoint, dialect, body)
    call.background = is_background(request.headers.get("priority"))
    return call


def is_background(priority: str | None) -> bool:
    """Whether an RFC 9218 `Priority` field value asks for the lowest urgency (`u=7`)."""
    for member in (priority or "").split(","):
        key, _, value = member.strip().partition("=")
        if key == "u":
            return value.split(";")[0].strip() == "7"
    return False


def call_for(caller: Caller, endpoint: str, dialect: str, body: Json) -> Call:
    """A Call on behalf of `caller` for a checked body."""
    return Call(
        caller=caller,
        endpoint=endpoint,
        dialect=dialect,
        requested=str(body.get("model")),
        stream=bool(body.get("stream")),
        schema=schema_of(body) if endpoint != "embeddings" else None,
    )
