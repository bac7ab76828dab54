"""`/admin/access`: what the tunnel exposes, who is allowed in, and the API keys."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template

from appliance.admin.sessions import CSRF_FIELD
from appliance.admin.site import back, page, site_of
from appliance.services import Services, Svc, in_thread
from store import keys
from store.errors import StoreError


class KeyForm(msgspec.Struct, kw_only=True):
    """The new-key form: a name and one or more scopes."""

    name: str = ""
    scopes: list[str] | str = msgspec.field(default_factory=list)
    csrf: str = msgspec.field(default="", name=CSRF_FIELD)


Form = Annotated[KeyForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


def _tunnel(svc: Services) -> dict[str, Any]:
    from appliance.tunnel_gateway import tunnel_gateway
    from bridge import tunnel

    cfg = svc.cfg
    try:
        plan: Any = tunnel.plan(tunnel_gateway(cfg.gateway), cfg.bridge.tunnel)
        plan_error = ""
    except tunnel.TunnelError as exc:
        plan, plan_error = None, str(exc)
    return {"plan": plan, "plan_error": plan_error, "status": tunnel.status(cfg.bridge.tunnel)}


def _access(svc: Services) -> dict[str, Any]:
    cfg = svc.cfg
    return {
        **_tunnel(svc),
        "tunnel_allow": cfg.gateway.tunnel.allow,
        "gateway_networks": cfg.gateway.allow_networks,
        "require_key": cfg.gateway.require_key,
        "admin_networks": cfg.admin.allow_networks,
        "admin_any": cfg.admin.allow_any_network,
        "keys": keys.list_all(svc.keys),
        "scopes": keys.SCOPES,
    }


class AccessController(Controller):
    """Tunnel, allowlists and keys."""

    path = "/access"

    @get("/")
    async def access(self, request: Request[Any, Any, Any], svc: Svc) -> Template:
        """The tunnel's plan and status, the allowlists, every key (revoked ones too)."""
        facts = await in_thread(_access, svc)
        return page(request, "access.html", "access", new_token=None, key_error="", **facts)

    @post("/keys", status_code=200)
    async def create_key(self, request: Request[Any, Any, Any], data: Form, svc: Svc) -> Template:
        """Create a key; its token is on this page once and never again."""
        scopes = [data.scopes] if isinstance(data.scopes, str) else data.scopes
        new_token: dict[str, str] | None = None
        error = ""
        try:
            parsed = keys.parse_scopes(",".join(scopes))
            key, token = await in_thread(keys.create, svc.keys, data.name.strip(), parsed)
            new_token = {"token": token, "name": key.name, "scopes": ",".join(key.scopes)}
        except StoreError as exc:
            error = str(exc)
        facts = await in_thread(_access, svc)
        return page(request, "access.html", "access", new_token=new_token, key_error=error, **facts)

    @post("/keys/{key_id:str}/revoke")
    async def revoke_key(
        self, request: Request[Any, Any, Any], key_id: FromPath[str], svc: Svc
    ) -> Redirect:
        """Revoke a key at once; its admin sessions end too."""
        try:
            await in_thread(keys.revoke, svc.keys, key_id)
        except StoreError as exc:
            return back(request, "/admin/access", f"cannot revoke: {exc}")
        site_of(request).sessions.end_for_key(key_id)
        return back(request, "/admin/access", f"key {key_id} revoked")
