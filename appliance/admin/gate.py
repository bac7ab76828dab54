"""The admin gate: LAN-only, a signed-in session, and a CSRF token on every POST.

It is the admin router's before-request hook, so it replaces the api's bearer-token hook
for everything under `/admin`, and nothing there is reached without passing it:
- a client address outside loopback, RFC 1918, link-local and ULA ranges (plus
  `[admin] allow_networks`) gets 403, unless `[admin] allow_any_network` is set;
- without a live session, a GET of a page is redirected to the sign-in page and anything
  else gets a 401 JSON error; only the sign-in page and its stylesheet are open;
- a POST without the session's CSRF token (form field `_csrf` or header `X-CSRF-Token`)
  gets 403, the sign-in form's included;
- a session whose key was revoked (by anyone, in any process) ends on its next request.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.response import Redirect

from appliance.admin.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Session
from appliance.admin.site import site_of
from appliance.config import AdminConfig
from appliance.services import Services

LAN_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
"""Loopback, RFC 1918, link-local and IPv6 ULA: the office LAN. Not Tailscale's 100.64/10,
which is the tunnel's side, nor documentation or public ranges."""

LOGIN = "/admin/login"
_OPEN = frozenset({LOGIN, "/admin/static/admin.css"})
_PAGE_EXCLUDED = ("/admin/static/", "/admin/api/")


def client_allowed(address: str, cfg: AdminConfig) -> bool:
    """True when a client at `address` may reach the admin page."""
    if cfg.allow_any_network:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an IP (a unix socket, a test client): refuse
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    extra = [ipaddress.ip_network(n, strict=False) for n in cfg.allow_networks]
    return any(ip in net for net in (*LAN_NETWORKS, *extra) if net.version == ip.version)


def error(status: int, message: str) -> Response[dict[str, Any]]:
    """The api's JSON error shape."""
    code = {401: "unauthorized", 403: "forbidden"}.get(status, "error")
    return Response({"error": code, "message": message, "status": status}, status_code=status)


def _is_page(request: Request[Any, Any, Any]) -> bool:
    path = request.scope["path"]
    return (
        request.method == "GET"
        and not path.startswith(_PAGE_EXCLUDED)
        and (not path.endswith("/events"))
    )


def _live(request: Request[Any, Any, Any]) -> Session | None:
    site = site_of(request)
    session = site.sessions.get(request.cookies.get(COOKIE))
    if session is None or not session.signed_in:
        return session
    svc: Services = request.app.state.svc
    if svc.verifier.verify(session.token) is None:  # revoked since it signed in
        site.sessions.end(session.id)
        return None
    return session


async def _csrf_sent(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if "form" in request.headers.get("content-type", ""):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def admin_gate(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Before-request hook of `/admin`: None lets the request through, else the refusal."""
    site = site_of(request)
    client = request.scope.get("client")
    if not client_allowed(client[0] if client else "", site.cfg.admin):
        return error(403, "the admin page answers only on the local network")
    path = request.scope["path"]
    session = _live(request)
    if path not in _OPEN and (session is None or not session.signed_in):
        if _is_page(request):
            return Redirect(f"{LOGIN}?next={quote(path)}", status_code=303)
        return error(401, "sign in to the admin page first")
    if request.method == "POST" and (
        session is None or not session.csrf_ok(await _csrf_sent(request))
    ):
        return error(403, "missing or wrong CSRF token: reload the page and try again")
    request.state.admin_session = session
    return None
