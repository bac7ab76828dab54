"""Who may call the gateway: every rule of `inference.access`, then the same through a real
gateway process over HTTP, and the refusal to start a gateway that is open to anyone.

The unit tests call `Access.check(peer, headers)` with real keys in a temp keys.db and a
fake tailscaled LocalAPI on a unix socket (`GET /localapi/v0/whois?addr=...`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from aiohttp import web

from inference.access import Access, Caller, Denied
from inference.config import GatewayConfig, TunnelConfig
from store import keys
from store.db import Database
from tests.conftest import ROOT, free_port, make_config
from tests.inference.upstreams import Gateway, Json, remote_backend, start_gateway

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
TAILNET_PEER = "100.101.102.103"  # a tagged tailnet node, as X-Forwarded-For names it
PROXY = "127.0.0.1"  # where `tailscale serve` connects from (the default trusted proxy)
LAN_PEER = "192.168.7.20"
STRANGER = "203.0.113.9"


def run(coro: Awaitable[T]) -> T:
    """Run one coroutine to its end."""

    async def main() -> T:
        return await coro

    return asyncio.run(main())


@dataclass
class Keyring:
    """Keys in a temp keys.db and the verifier the gateway would use."""

    db: Database
    verifier: keys.Verifier
    gateway: str
    admin: str
    field_only: str
    revoked: str

    def bearer(self, token: str) -> dict[str, str]:
        """`authorization: Bearer <token>` (headers reach `check` lowercased)."""
        return {"authorization": f"Bearer {token}"}


@pytest.fixture
def keyring(tmp_path: Path) -> Iterator[Keyring]:
    """A keys.db with a gateway key, an admin key, a field-only key and a revoked key."""
    store = make_config(tmp_path / "data").store
    db = keys.open_keys(str(tmp_path / "keys.db"), store)
    tokens = {
        name: keys.create(db, name, scopes)[1]
        for name, scopes in (
            ("laptop", ("gateway",)),
            ("ops", ("admin",)),
            ("tablet", ("field",)),
        )
    }
    old, revoked = keys.create(db, "old", ("gateway",))
    keys.revoke(db, old.id)
    try:
        yield Keyring(
            db,
            keys.Verifier(db),
            tokens["laptop"],
            tokens["ops"],
            tokens["tablet"],
            revoked,
        )
    finally:
        db.close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short temp dir for unix sockets (their paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def access(
    keyring: Keyring,
    *,
    allow: list[str] | None = None,
    trusted: list[str] | None = None,
    allow_funnel: bool = False,
    socket: str = "/nonexistent/tailscaled.sock",
    require_key: bool = True,
    networks: list[str] | None = None,
    force_open: bool = False,
) -> Access:
    """An Access over a gateway config built from the arguments."""
    tunnel = TunnelConfig(
        allow=allow or [],
        trusted_proxies=trusted if trusted is not None else ["127.0.0.1/32"],
        allow_funnel=allow_funnel,
        localapi_socket=socket,
    )
    gw = GatewayConfig(
        require_key=require_key,
        allow_networks=networks or [],
        force_open=force_open,
        tunnel=tunnel,
    )
    return Access(gw, keyring.verifier)


def allowed(acc: Access, peer: str, headers: dict[str, str]) -> Caller:
    """The caller `check` lets in (fails the test if it refuses)."""
    return run(acc.check(peer, headers))


def refused(acc: Access, peer: str, headers: dict[str, str]) -> Denied:
    """The refusal `check` raises (fails the test if it lets the caller in)."""
    with pytest.raises(Denied) as err:
        run(acc.check(peer, headers))
    return err.value


# --- 1. identity headers only from a trusted proxy ---------------------------------


@pytest.mark.parametrize(
    "header",
    ["tailscale-user-login", "tailscale-user-name", "tailscale-user-profile-pic"],
)
def test_identity_headers_from_an_untrusted_peer_are_refused(keyring: Keyring, header: str) -> None:
    """Anyone can type a header: from a peer that is not the proxy, it is a 403, even with
    a valid key and even for a login on the allow list."""
    acc = access(keyring, allow=["alice@example.com"])
    headers = {header: "alice@example.com"}
    assert refused(acc, STRANGER, headers).status == 403
    assert refused(acc, STRANGER, {**headers, **keyring.bearer(keyring.gateway)}).status == 403


def test_funnel_header_from_an_untrusted_peer_is_refused(keyring: Keyring) -> None:
    """A Funnel marker from anywhere but the proxy: 403, even where Funnel is allowed."""
    acc = access(keyring, allow_funnel=True)
    headers = {"tailscale-funnel-request": "?1", **keyring.bearer(keyring.gateway)}
    assert refused(acc, STRANGER, headers).status == 403


# --- 2. Funnel ---------------------------------------------------------------------------


def test_funnel_is_refused_unless_allowed(keyring: Keyring) -> None:
    """Public-internet requests through Funnel: 403 by default, even with a valid key."""
    acc = access(keyring)
    headers = {"tailscale-funnel-request": "?1", "x-forwarded-for": "198.51.100.4"}
    assert refused(acc, PROXY, headers).status == 403
    assert refused(acc, PROXY, {**headers, **keyring.bearer(keyring.gateway)}).status == 403


def test_allowed_funnel_still_needs_a_key(keyring: Keyring) -> None:
    """With `allow_funnel`, a Funnel request needs a valid gateway key: none → 401, a bad
    one → 401, a good one → in, as that key."""
    acc = access(keyring, allow_funnel=True, allow=["alice@example.com"])
    headers = {"tailscale-funnel-request": "?1", "x-forwarded-for": "198.51.100.4"}
    assert refused(acc, PROXY, headers).status == 401
    assert refused(acc, PROXY, {**headers, **keyring.bearer("fbx_nope_nope")}).status == 401
    caller = allowed(acc, PROXY, {**headers, **keyring.bearer(keyring.gateway)})
    assert caller == Caller("laptop", "key")


# --- 3. the tunnel: logins and tags ------------------------------------------------------


def test_allowed_login_needs_no_key(keyring: Keyring) -> None:
    """A login on the allow list, from the proxy: in without a key, named by its login."""
    acc = access(keyring, allow=["alice@example.com", "tag:office"])
    headers = {"tailscale-user-login": "alice@example.com", "x-forwarded-for": TAILNET_PEER}
    assert allowed(acc, PROXY, headers) == Caller("alice@example.com", "tunnel")


def test_login_not_allowed_is_refused_even_with_a_key(keyring: Keyring) -> None:
    """A tailnet login not on the list: 403, and a valid key does not rescue it."""
    acc = access(keyring, allow=["alice@example.com"])
    headers = {"tailscale-user-login": "mallory@example.com", "x-forwarded-for": TAILNET_PEER}
    assert refused(acc, PROXY, headers).status == 403
    assert refused(acc, PROXY, {**headers, **keyring.bearer(keyring.gateway)}).status == 403
    assert refused(acc, PROXY, {**headers, **keyring.bearer(keyring.admin)}).status == 403


def test_identity_without_a_login_is_refused(keyring: Keyring) -> None:
    """Identity headers that name no login (only a display name): 403."""
    acc = access(keyring, allow=["alice@example.com"])
    assert refused(acc, PROXY, {"tailscale-user-name": "Alice"}).status == 403


@dataclass
class FakeTailscaled:
    """What the fake LocalAPI was asked."""

    tags: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)

    async def whois(self, request: web.Request) -> web.Response:
        """`GET /localapi/v0/whois?addr=ip[:port]`, as tailscaled answers it."""
        addr = request.query.get("addr", "")
        self.asked.append(addr)
        if not addr:
            return web.Response(status=400, text="missing 'addr' parameter")
        ip = addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr
        if ip not in self.tags:
            return web.Response(status=404, text="no match for IP:port")
        body: Json = {
            "Node": {"ID": 7, "Name": "scanner.tailnet.ts.net.", "Tags": self.tags[ip]},
            "UserProfile": {"ID": 1, "LoginName": "tagged-devices", "DisplayName": "Tagged"},
        }
        return web.json_response(body)


@asynccontextmanager
async def tailscaled(path: Path, tags: dict[str, list[str]]) -> AsyncIterator[FakeTailscaled]:
    """A fake tailscaled LocalAPI listening on the unix socket `path`."""
    fake = FakeTailscaled(tags)
    app = web.Application()
    app.router.add_get("/localapi/v0/whois", fake.whois)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, str(path))
    await site.start()
    try:
        yield fake
    finally:
        await runner.cleanup()


def test_tagged_node_with_an_allowed_tag_is_let_in(keyring: Keyring, sock_dir: Path) -> None:
    """No identity headers (a tagged node): tailscaled's whois of the forwarded address says
    its tags; one of them is allowed, so it is in, named by that tag."""
    sock = sock_dir / "tailscaled.sock"
    acc = access(keyring, allow=["tag:office"], socket=str(sock))

    async def scenario() -> tuple[Caller, list[str]]:
        async with tailscaled(sock, {TAILNET_PEER: ["tag:printer", "tag:office"]}) as fake:
            # `tailscale serve` appends the peer: the last address is the one to ask about.
            headers = {"x-forwarded-for": f"10.0.0.1, {TAILNET_PEER}"}
            return await acc.check(PROXY, headers), fake.asked

    caller, asked = run(scenario())
    assert caller == Caller("tag:office", "tunnel")
    assert asked == [TAILNET_PEER]


def test_tagged_node_without_an_allowed_tag_is_refused(keyring: Keyring, sock_dir: Path) -> None:
    """A tagged node whose tags are not on the list, or a node tailscaled does not know: 403,
    and a key does not rescue it."""
    sock = sock_dir / "tailscaled.sock"
    acc = access(keyring, allow=["tag:office", "alice@example.com"], socket=str(sock))

    async def scenario() -> list[int]:
        statuses = []
        async with tailscaled(sock, {TAILNET_PEER: ["tag:lab"], "100.64.0.9": []}):
            for peer, extra in (
                (TAILNET_PEER, {}),
                (TAILNET_PEER, keyring.bearer(keyring.gateway)),
                ("100.64.0.9", {}),
                ("100.64.0.77", {}),  # unknown to tailscaled: 404
            ):
                try:
                    await acc.check(PROXY, {"x-forwarded-for": peer, **extra})
                    statuses.append(200)
                except Denied as exc:
                    statuses.append(exc.status)
        return statuses

    assert run(scenario()) == [403, 403, 403, 403]


def test_tagged_node_is_refused_when_tailscaled_is_missing(
    keyring: Keyring, sock_dir: Path
) -> None:
    """No LocalAPI socket: nobody can say who the node is, so 403 (never let in blind)."""
    acc = access(keyring, allow=["tag:office"], socket=str(sock_dir / "absent.sock"))
    denied = refused(acc, PROXY, {"x-forwarded-for": TAILNET_PEER})
    assert denied.status == 403
    assert "tailscaled" in denied.message


# --- 4. keys -----------------------------------------------------------------------------


def test_key_rules(keyring: Keyring) -> None:
    """No key → 401; a malformed, unknown or revoked key → 401; a key without the gateway
    scope → 403; a gateway or admin key → in, as that key."""
    acc = access(keyring)
    assert refused(acc, STRANGER, {}).status == 401
    for bad in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer fbx_0000_nope", "Bearer garbage"):
        assert refused(acc, STRANGER, {"authorization": bad}).status == 401, bad
    assert refused(acc, STRANGER, keyring.bearer(keyring.revoked)).status == 401
    wrong_scope = refused(acc, STRANGER, keyring.bearer(keyring.field_only))
    assert wrong_scope.status == 403
    assert "scope" in wrong_scope.message
    assert allowed(acc, STRANGER, keyring.bearer(keyring.gateway)) == Caller("laptop", "key")
    assert allowed(acc, STRANGER, keyring.bearer(keyring.admin)) == Caller("ops", "key")
    assert allowed(acc, PROXY, {"authorization": f"bearer {keyring.gateway}"}).name == "laptop"


def test_revoking_a_key_takes_effect_at_once(keyring: Keyring) -> None:
    """A key that worked is refused on the very next check after it is revoked."""
    acc = access(keyring)
    key, token = keys.create(keyring.db, "temp", ("gateway",))
    assert allowed(acc, STRANGER, keyring.bearer(token)).name == "temp"
    keys.revoke(keyring.db, key.id)
    assert refused(acc, STRANGER, keyring.bearer(token)).status == 401


# --- 5. LAN ranges and 6. the open door -----------------------------------------------


def test_allowed_network_needs_no_key(keyring: Keyring) -> None:
    """A peer inside `allow_networks` is in without a key; one outside still needs one."""
    acc = access(keyring, networks=["192.168.7.0/24"])
    assert allowed(acc, LAN_PEER, {}) == Caller(f"network:{LAN_PEER}", "network")
    assert refused(acc, STRANGER, {}).status == 401
    assert allowed(acc, STRANGER, keyring.bearer(keyring.gateway)).name == "laptop"
    # A key that is sent is checked, even from inside the range.
    assert refused(acc, LAN_PEER, keyring.bearer("fbx_0000_nope")).status == 401


def test_no_key_required_but_only_for_the_listed_networks(keyring: Keyring) -> None:
    """`require_key = false` with `allow_networks`: outside the range is a 403."""
    acc = access(keyring, require_key=False, networks=["192.168.7.0/24"])
    assert allowed(acc, LAN_PEER, {}).via == "network"
    assert refused(acc, STRANGER, {}).status == 403


def test_force_open_admits_anyone(keyring: Keyring) -> None:
    """`require_key = false` + `force_open`: anyone, from anywhere, without a key."""
    acc = access(keyring, require_key=False, force_open=True)
    assert allowed(acc, STRANGER, {}) == Caller("anonymous", "open")
    assert allowed(acc, LAN_PEER, {}) == Caller("anonymous", "open")


# --- through a real gateway process ----------------------------------------------------


@dataclass
class Gateways:
    """This module's gateway processes and what the open config did."""

    default_proxy: Gateway
    other_proxy: Gateway
    open_result: subprocess.CompletedProcess[str]


def _gateway_config(dead_url: str, extra: str = "") -> str:
    return (
        remote_backend("openai", "nowhere", dead_url, ["m-nowhere"])
        + """
[gateway.tunnel]
allow = ["alice@example.com"]
"""
        + extra
    )


def _start_open_gateway(root: Path) -> subprocess.CompletedProcess[str]:
    config = root / "open.toml"
    config.write_text(
        remote_backend("openai", "nowhere", "http://127.0.0.1:9/v1", ["m"])
        + "\n[gateway]\nrequire_key = false\n"
    )
    argv = [sys.executable, "-m", "appliance", "--config", str(config), "serve", "gateway"]
    return subprocess.run(
        [*argv, "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "FIELDBOX_CONFIG"},
            "FIELDBOX_DATA": str(root / "open-data"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    """Two gateways (default trusted proxy; proxy 10.9.9.0/24) and one open-config attempt,
    all started at once."""
    root = tmp_path_factory.mktemp("access")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    other = '\ntrusted_proxies = ["10.9.9.0/24"]\n'
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(start_gateway, root / "default", _gateway_config(dead)),
            pool.submit(start_gateway, root / "other", _gateway_config(dead, other)),
        ]
        open_future = pool.submit(_start_open_gateway, root)
        started = [f.result() for f in futures if f.exception() is None]
    try:
        first, second = (f.result() for f in futures)
        yield Gateways(first, second, open_future.result())
    finally:
        for gw in started:
            gw.stop()


def _get(gw: Gateway, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(gw.url + path, headers=headers, timeout=10)


def test_gateway_lets_in_an_allowed_tailnet_login(gateways: Gateways) -> None:
    """Through the proxy (127.0.0.1): an allowed login needs no key, in both dialects."""
    gw = gateways.default_proxy
    alice = {"Tailscale-User-Login": "alice@example.com", "X-Forwarded-For": TAILNET_PEER}
    resp = _get(gw, "/v1/models", alice)
    assert resp.status_code == 200
    assert "m-nowhere" in [m["id"] for m in resp.json()["data"]]
    assert _get(gw, "/api/tags", alice).status_code == 200


def test_gateway_refuses_a_login_not_allowed(gateways: Gateways) -> None:
    """Another login: 403 in each dialect's error shape, even with a valid key."""
    gw = gateways.default_proxy
    bob = {"Tailscale-User-Login": "bob@example.com"}
    resp = _get(gw, "/v1/models", bob)
    assert resp.status_code == 403
    assert resp.json()["error"]["type"] == "permission_error"
    assert _get(gw, "/v1/models", {**bob, **gw.headers}).status_code == 403
    ollama_resp = _get(gw, "/api/tags", bob)
    assert ollama_resp.status_code == 403
    assert isinstance(ollama_resp.json()["error"], str)


def test_gateway_without_credentials_is_401_and_probes_stay_open(gateways: Gateways) -> None:
    """No key, no identity: 401 with WWW-Authenticate; a key gets in; /health, /ready and
    /metrics answer anyone."""
    gw = gateways.default_proxy
    resp = _get(gw, "/v1/models", {})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert _get(gw, "/v1/models", gw.headers).status_code == 200
    assert _get(gw, "/health", {}).status_code == 200
    assert _get(gw, "/ready", {}).status_code == 503  # its only backend is unreachable
    assert _get(gw, "/metrics", {}).status_code == 200


def test_gateway_ignores_identity_headers_from_an_untrusted_peer(gateways: Gateways) -> None:
    """With `trusted_proxies = ["10.9.9.0/24"]`, 127.0.0.1 is not the proxy: the same
    allowed login is a 403 (a forged header), while a plain key still works."""
    gw = gateways.other_proxy
    alice = {"Tailscale-User-Login": "alice@example.com"}
    resp = _get(gw, "/v1/models", alice)
    assert resp.status_code == 403
    assert "trusted proxy" in resp.json()["error"]["message"]
    assert _get(gw, "/v1/models", gw.headers).status_code == 200


def test_open_gateway_config_refuses_to_start(gateways: Gateways) -> None:
    """`require_key = false` with no `allow_networks` and no `force_open`: `fieldbox serve
    gateway` exits non-zero and says why and how to mean it."""
    result = gateways.open_result
    assert result.returncode != 0
    assert "require_key" in result.stderr
    assert "open to anyone" in result.stderr
    assert "force_open" in result.stderr
