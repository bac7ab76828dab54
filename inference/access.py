"""Who may call the gateway: API keys, tailnet identities through `tailscale serve`, LAN ranges.

The order of the rules (each documented in docs/gateway.md):
1. Tailscale identity or Funnel headers from a peer that is not a trusted proxy → 403.
2. Funnel requests (public internet) → 403 unless `allow_funnel`; then a key is required.
3. A request `tailscale serve` proxied (a trusted proxy adding X-Forwarded-For or identity
   headers): the login, or for tagged nodes the tags from LocalAPI `whois`, must be in
   `tunnel.allow`, else 403. No key is needed; a key does not rescue a refused identity.
4. A Bearer key: invalid → 401, without the `gateway`/`admin` scope → 403.
5. A peer inside `allow_networks` needs no key.
6. Otherwise 401 (or, with `require_key = false` and `force_open`, anyone is let in).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from inference.config import GatewayConfig
from store.keys import Verifier

GATEWAY_SCOPES = frozenset({"gateway", "admin"})
_IDENTITY = frozenset({"tailscale-user-login", "tailscale-user-name", "tailscale-user-profile-pic"})
_FUNNEL = "tailscale-funnel-request"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Caller:
    """Who a request came from: a key's name, a tailnet login or tag, a network, or nobody."""

    name: str
    via: str


class Denied(Exception):
    """The request may not use the gateway (401 or 403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Access:
    """The access rules of one gateway config."""

    def __init__(self, gw: GatewayConfig, verifier: Verifier | None) -> None:
        self.gw = gw
        self.verifier = verifier
        self.allow = frozenset(gw.tunnel.allow)
        self.proxies = [ipaddress.ip_network(c, strict=False) for c in gw.tunnel.trusted_proxies]
        self.networks = [ipaddress.ip_network(c, strict=False) for c in gw.allow_networks]

    async def check_scope(self, scope: Mapping[str, Any]) -> Caller:
        """`check` for an ASGI scope: its peer address and its headers."""
        client = scope.get("client")
        # The raw header list, not a framework's Headers: cheaper, and names arrive lowercased.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        return await self.check(client[0] if client else "", headers)

    async def check(self, peer: str, headers: Mapping[str, str]) -> Caller:
        """The caller, or Denied."""
        identity = not _IDENTITY.isdisjoint(headers.keys())
        funnel = _FUNNEL in headers
        forwarded = "x-forwarded-for" in headers
        # Parsing the peer address costs more than the rest: only when a proxy matters.
        trusted = (identity or funnel or forwarded) and _inside(peer, self.proxies)
        if (identity or funnel) and not trusted:
            raise Denied(403, "Tailscale identity headers are only believed from a trusted proxy")
        if funnel and not self.gw.tunnel.allow_funnel:
            raise Denied(403, "requests from the public internet (Funnel) are not allowed")
        if trusted and not funnel and (identity or forwarded):
            return await self._tunnel(headers, identity)
        authorization = headers.get("authorization")
        if authorization is not None:
            return self._key(authorization)
        if _inside(peer, self.networks):
            return Caller(f"network:{peer}", "network")
        if not self.gw.require_key and self.gw.force_open and not self.networks:
            return Caller("anonymous", "open")
        if not self.gw.require_key:
            raise Denied(403, "this address is not in an allowed network; use a key")
        raise Denied(401, "missing bearer key (a key with the gateway scope)")

    async def _tunnel(self, headers: Mapping[str, str], identity: bool) -> Caller:
        if identity:
            login = headers.get("tailscale-user-login", "")
            if login and login in self.allow:
                return Caller(login, "tunnel")
            raise Denied(403, "this tailnet login is not allowed to use the gateway")
        # Tagged nodes carry no identity headers: ask tailscaled who the peer is.
        address = headers.get("x-forwarded-for", "").split(",")[-1].strip()
        tags = await self._whois_tags(address)
        if tags is None:
            raise Denied(403, "tunnel request without identity, and tailscaled cannot tell who")
        allowed = sorted(self.allow.intersection(tags))
        if not allowed:
            raise Denied(403, "this tailnet node's tags are not allowed to use the gateway")
        return Caller(allowed[0], "tunnel")

    async def _whois_tags(self, address: str) -> list[str] | None:
        sock = self.gw.tunnel.localapi_socket
        if not address or not os.path.exists(sock):
            return None
        try:
            async with (
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session,
                session.get(
                    "http://local-tailscaled.sock/localapi/v0/whois",
                    params={"addr": address},
                    timeout=aiohttp.ClientTimeout(total=2),
                ) as resp,
            ):
                if resp.status != 200:
                    return None
                data = msgspec.json.decode(await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError, msgspec.DecodeError):
            return None
        node = data.get("Node") if isinstance(data, dict) else None
        tags = node.get("Tags") if isinstance(node, dict) else None
        return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []

    def _key(self, authorization: str) -> Caller:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Denied(401, "the Authorization header must be 'Bearer <key>'")
        key = self.verifier.verify(token) if self.verifier is not None else None
        if key is None:
            raise Denied(401, "invalid or revoked key")
        if not GATEWAY_SCOPES.intersection(key.scopes):
            raise Denied(403, "this key lacks the gateway scope")
        return Caller(key.name, "key")


def _inside(peer: str, networks: list[Network]) -> bool:
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in net for net in networks)
