"""Bearer keys and scopes, the open probes, metrics, the schema, and request ids."""

from __future__ import annotations

import re

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.config import FieldboxConfig
from store import keys
from store.keys import open_keys
from store.paths import Layout
from tests.conftest import make_token

# A token of the right shape that no key issued.
UNKNOWN_TOKEN = "fbx_000000000000_" + "A" * 43
LOC = {"id": "loc1", "account": "acme", "geo_prefix": "u4pr", "name": "12 Main St"}


def _assert_json_error(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_key_is_401_json(client: TestClient[Litestar]) -> None:
    """Without a bearer token the field API answers 401 with a JSON body and a challenge."""
    del client.headers["Authorization"]
    for resp in (
        client.get("/v1/locations"),
        client.post("/v1/locations", json=LOC),
        client.get("/v1/assets"),
        client.get("/v1/locations/loc1/docs/c/k"),
    ):
        _assert_json_error(resp, 401)
        assert resp.headers["www-authenticate"].lower().startswith("bearer")
    _assert_json_error(client.get("/v1/locations", headers=_as(UNKNOWN_TOKEN)), 401)


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer not-a-token", "fbx_x_y", "Bearer fbx__"],
)
def test_malformed_authorization_is_401(client: TestClient[Litestar], header: str) -> None:
    """Other schemes, empty or malformed tokens are all 401."""
    _assert_json_error(client.get("/v1/locations", headers={"Authorization": header}), 401)


def test_tampered_secret_is_401(client: TestClient[Litestar], token: str) -> None:
    """A real key id with the wrong secret is refused."""
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    _assert_json_error(client.get("/v1/locations", headers=_as(tampered)), 401)


def test_gateway_only_key_is_403(client: TestClient[Litestar], cfg: FieldboxConfig) -> None:
    """A key scoped only to the model gateway cannot use the field API."""
    gateway = make_token(cfg, ("gateway",))
    for resp in (
        client.get("/v1/locations", headers=_as(gateway)),
        client.post("/v1/locations", json=LOC, headers=_as(gateway)),
        client.get("/v1/assets", headers=_as(gateway)),
        client.post(
            "/v1/uploads", headers={**_as(gateway), "Tus-Resumable": "1.0.0", "Upload-Length": "1"}
        ),
    ):
        _assert_json_error(resp, 403)
    assert client.get("/v1/locations/loc1").status_code == 404  # nothing was created


def test_revoked_key_is_401(client: TestClient[Litestar], cfg: FieldboxConfig) -> None:
    """A key stops working the moment it is revoked."""
    db = open_keys(str(Layout(cfg.data_dir).keys_db), cfg.store)
    try:
        key, secret = keys.create(db, "tablet", ("field",))
        assert client.get("/v1/locations", headers=_as(secret)).status_code == 200
        keys.revoke(db, key.id)
    finally:
        db.close()
    _assert_json_error(client.get("/v1/locations", headers=_as(secret)), 401)


def test_admin_key_works_on_field_api(client: TestClient[Litestar], cfg: FieldboxConfig) -> None:
    """An `admin` key may do everything a `field` key may."""
    admin = make_token(cfg, ("admin",))
    assert client.post("/v1/locations", json=LOC, headers=_as(admin)).status_code == 201
    assert client.get("/v1/locations/loc1", headers=_as(admin)).json()["id"] == "loc1"
    put = client.put(
        "/v1/locations/loc1/docs/c/k", content=b"{}", headers={**_as(admin), "If-None-Match": "*"}
    )
    assert put.status_code == 201


@pytest.mark.parametrize("path", ["/health", "/ready", "/version", "/metrics", "/schema"])
def test_probes_need_no_key(client: TestClient[Litestar], path: str) -> None:
    """Health, readiness, version, metrics and the schema answer without a key."""
    del client.headers["Authorization"]
    assert client.get(path).status_code == 200


def test_health_ready_version_bodies(client: TestClient[Litestar]) -> None:
    """The probes say what the fleet operator needs: ok, checks, version."""
    del client.headers["Authorization"]
    health = client.get("/health").json()
    assert health["ok"] is True and health["process"] == "api"
    assert health["uptime_s"] >= 0
    ready = client.get("/ready").json()
    assert ready["ok"] is True
    assert set(ready["checks"]) >= {"data_dir", "databases", "disk"}
    assert all(v == "ok" for v in ready["checks"].values())
    version = client.get("/version").json()
    assert version["name"] == "fieldbox"
    assert re.match(r"^\d+\.\d+", version["version"])
    assert version["version"] == health["version"]


def test_metrics_are_prometheus_text(client: TestClient[Litestar]) -> None:
    """/metrics is Prometheus text that counts the requests answered, by route and status."""
    client.get("/v1/locations")
    del client.headers["Authorization"]
    client.get("/v1/locations")
    resp = client.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert "# TYPE fieldbox_http_requests_total counter" in text
    ok = re.search(
        r'^fieldbox_http_requests_total\{method="GET",route="/v1/locations",status="200"\} (\S+)$',
        text,
        re.M,
    )
    denied = re.search(
        r'^fieldbox_http_requests_total\{method="GET",route="/v1/locations",status="401"\} (\S+)$',
        text,
        re.M,
    )
    assert ok is not None and float(ok.group(1)) == 1.0
    assert denied is not None and float(denied.group(1)) == 1.0


def test_metrics_label_routes_not_raw_paths(client: TestClient[Litestar]) -> None:
    """Request metrics are labelled by route template, so ids in URLs cannot explode the series."""
    for loc_id in ("site-a", "site-b", "site-c"):
        assert client.get(f"/v1/locations/{loc_id}").status_code == 404
    client.get("/no/such/thing")
    text = client.get("/metrics").text
    assert "site-a" not in text and "/no/such/thing" not in text
    series = re.search(
        r'^fieldbox_http_requests_total\{method="GET",route="/v1/locations/\{location_id\}",'
        r'status="404"\} (\S+)$',
        text,
        re.M,
    )
    assert series is not None and float(series.group(1)) == 3.0


def test_openapi_schema_lists_the_api(client: TestClient[Litestar]) -> None:
    """The OpenAPI document is served without a key and describes the field API's paths."""
    del client.headers["Authorization"]
    schema = client.get("/schema/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    assert {"/v1/locations", "/v1/assets", "/v1/uploads", "/health"} <= paths
    assert "/v1/locations/{location_id}/docs/{collection}/{key}" in paths


def test_every_response_has_a_request_id(client: TestClient[Litestar]) -> None:
    """Successes, auth failures, bad input and unknown routes all carry X-Request-ID."""
    responses = [
        client.get("/health"),
        client.get("/v1/locations"),
        client.get("/v1/locations/..x"),
        client.get("/no/such/route"),
        client.get("/v1/locations", headers={"Authorization": "Bearer nope"}),
        client.post("/v1/locations", content=b"not json"),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


def test_safe_incoming_request_id_is_echoed(client: TestClient[Litestar]) -> None:
    """A client's own safe X-Request-ID comes back unchanged, even on errors."""
    rid = "tablet-3.req:0042_a"
    assert client.get("/health", headers={"X-Request-ID": rid}).headers["x-request-id"] == rid
    resp = client.get("/v1/locations/nope", headers={"X-Request-ID": rid})
    assert resp.status_code == 404
    assert resp.headers["x-request-id"] == rid


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "a\\b", "<script>", "a/b"])
def test_unsafe_incoming_request_id_is_replaced(client: TestClient[Litestar], bad: str) -> None:
    """An unsafe or overlong X-Request-ID is not echoed; a fresh one is issued instead."""
    resp = client.get("/health", headers={"X-Request-ID": bad})
    got = resp.headers["x-request-id"]
    assert got and got != bad
    assert re.match(r"^[A-Za-z0-9._:-]{1,64}$", got)


def test_unknown_route_is_json_404(client: TestClient[Litestar]) -> None:
    """An unknown path gets a JSON 404, not an HTML page."""
    _assert_json_error(client.get("/v1/nothing-here"), 404)
