"""`/v1/locations`: create, list, read; ids validated; duplicates refused."""

from __future__ import annotations

from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import TestClient

from appliance.config import FieldboxConfig


def _loc(loc_id: str = "loc1", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": loc_id, "account": "acme", "geo_prefix": "u4pr", "name": "Site"}
    body.update(over)
    return body


def _assert_json_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["message"]
    return body


def test_create_returns_201_and_the_location(client: TestClient[Litestar]) -> None:
    """POST creates a location: 201 with the stored record."""
    resp = client.post("/v1/locations", json=_loc(name="12 Main St"))
    assert resp.status_code == 201
    body = resp.json()
    assert {k: body[k] for k in ("id", "account", "geo_prefix", "name")} == {
        "id": "loc1",
        "account": "acme",
        "geo_prefix": "u4pr",
        "name": "12 Main St",
    }
    assert body["created_at"] > 0


def test_create_then_get_and_list(client: TestClient[Litestar]) -> None:
    """Created locations can be read one by one and are listed sorted by id."""
    for loc_id in ("zulu", "alpha", "mike"):
        assert client.post("/v1/locations", json=_loc(loc_id)).status_code == 201
    got = client.get("/v1/locations/mike")
    assert got.status_code == 200
    assert got.json()["id"] == "mike"
    listed = client.get("/v1/locations")
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["items"]] == ["alpha", "mike", "zulu"]


def test_list_is_empty_on_a_new_box(client: TestClient[Litestar]) -> None:
    """A fresh box lists no locations."""
    assert client.get("/v1/locations").json() == {"items": []}


def test_duplicate_id_is_409(client: TestClient[Litestar]) -> None:
    """Creating an id that exists is 409 and leaves the original alone."""
    client.post("/v1/locations", json=_loc(name="first"))
    _assert_json_error(client.post("/v1/locations", json=_loc(name="second")), 409)
    assert client.get("/v1/locations/loc1").json()["name"] == "first"


def test_case_insensitive_duplicate_is_409(client: TestClient[Litestar]) -> None:
    """Ids differing only in case collide (they would on a case-insensitive filesystem)."""
    client.post("/v1/locations", json=_loc("loc1"))
    for other in ("LOC1", "Loc1", "lOc1"):
        _assert_json_error(client.post("/v1/locations", json=_loc(other, account="beta")), 409)
    assert [i["id"] for i in client.get("/v1/locations").json()["items"]] == ["loc1"]


def test_unknown_location_is_404(client: TestClient[Litestar]) -> None:
    """Reading a location that does not exist is a JSON 404."""
    _assert_json_error(client.get("/v1/locations/nowhere"), 404)


BAD_IDS = ["..", ".", "a/b", "a\\b", "-lead", "_lead", "has space", "dot.ted", "x" * 129, "", "é"]


def test_invalid_id_in_body_is_400(client: TestClient[Litestar]) -> None:
    """Ids that are not safe path components are refused with 400 and nothing is created."""
    for bad in BAD_IDS:
        _assert_json_error(client.post("/v1/locations", json=_loc(bad)), 400)
    assert client.get("/v1/locations").json()["items"] == []


def test_longest_id_is_accepted(client: TestClient[Litestar]) -> None:
    """An id of exactly 128 characters is fine (the limit is not off by one)."""
    assert client.post("/v1/locations", json=_loc("x" * 128)).status_code == 201
    assert client.get(f"/v1/locations/{'x' * 128}").status_code == 200


def test_invalid_account_or_geo_prefix_is_400(
    client: TestClient[Litestar], cfg: FieldboxConfig
) -> None:
    """Account and geo prefix become folders too, so they are validated the same way."""
    for field in ("account", "geo_prefix"):
        for bad in ("..", "a/b", "../../etc", "-x"):
            _assert_json_error(client.post("/v1/locations", json=_loc(**{field: bad})), 400)
    assert client.get("/v1/locations").json()["items"] == []
    assert list(cfg.data_dir.parent.rglob("location.db")) == []


def test_invalid_id_in_path_is_400(client: TestClient[Litestar]) -> None:
    """Unsafe ids in the URL, percent-encoded ones included, are 400 JSON."""
    for path in ("%2e%2e", "%2E%2E", "-lead", "x" * 200, "a%5Cb", "dot.ted", "%2e%2e%5c"):
        _assert_json_error(client.get(f"/v1/locations/{path}"), 400)


def test_trailing_newline_in_an_id_is_400(client: TestClient[Litestar]) -> None:
    """`loc1\\n` is not `loc1`: refused in the path and in a body, nothing created."""
    _assert_json_error(client.post("/v1/locations", json=_loc(id="loc1\n")), 400)
    _assert_json_error(client.post("/v1/locations", json=_loc(account="acme\n")), 400)
    _assert_json_error(client.get("/v1/locations/loc1%0A"), 400)
    assert client.get("/v1/locations").json()["items"] == []


def test_slash_in_path_id_is_404_json(client: TestClient[Litestar]) -> None:
    """An encoded slash is decoded before routing: no route matches, a JSON 404."""
    _assert_json_error(client.get("/v1/locations/a%2Fb"), 404)


def test_unknown_fields_are_400(client: TestClient[Litestar]) -> None:
    """A body with fields the API does not know is refused, naming the field."""
    body = _assert_json_error(client.post("/v1/locations", json=_loc(colour="red")), 400)
    assert "colour" in body["message"]
    _assert_json_error(client.get("/v1/locations/loc1"), 404)


def test_malformed_bodies_are_400(client: TestClient[Litestar]) -> None:
    """Bodies that are not a complete, well-typed location are 400 JSON, not 500."""
    for payload in (
        b"",
        b"not json",
        b"[]",
        b'{"id": "loc1"}',
        b'{"id": 5, "account": "a", "geo_prefix": "g", "name": "n"}',
        b'{"id": "loc1", "account": "a", "geo_prefix": "g", "name": ""}',
        b'{"id": "loc1", "account": "a", "geo_prefix": "g", "name": null}',
    ):
        resp = client.post(
            "/v1/locations", content=payload, headers={"Content-Type": "application/json"}
        )
        _assert_json_error(resp, 400)
    assert client.get("/v1/locations").json()["items"] == []


def test_location_persists_across_restart(cfg: FieldboxConfig, token: str) -> None:
    """A created location is still there after the api process is restarted."""
    from appliance.app import create_app

    with TestClient(app=create_app(cfg)) as first:
        first.headers["Authorization"] = f"Bearer {token}"
        assert first.post("/v1/locations", json=_loc()).status_code == 201
    with TestClient(app=create_app(cfg)) as second:
        second.headers["Authorization"] = f"Bearer {token}"
        assert second.get("/v1/locations/loc1").json()["name"] == "Site"
