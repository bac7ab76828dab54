"""`/v1/locations/{id}/docs/{collection}/{key}`: exact bytes, ETags, CAS, limits, paging."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.app import create_app
from tests.conftest import make_config, make_token

DOC = "/v1/locations/loc1/docs/inspections/roof"


@pytest.fixture
def api(client: TestClient[Litestar]) -> TestClient[Litestar]:
    """The client, with location `loc1` created."""
    resp = client.post(
        "/v1/locations", json={"id": "loc1", "account": "acme", "geo_prefix": "u4pr", "name": "S"}
    )
    assert resp.status_code == 201
    return client


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["message"]
    return body


def _create(api: TestClient[Litestar], url: str, body: bytes) -> str:
    resp = api.put(url, content=body, headers={"If-None-Match": "*"})
    assert resp.status_code == 201, resp.text
    return resp.headers["etag"]


def test_create_returns_201_and_etag(api: TestClient[Litestar]) -> None:
    """PUT with If-None-Match: * creates the document: 201 with a quoted ETag."""
    resp = api.put(DOC, content=b'{"ok": true}', headers={"If-None-Match": "*"})
    assert resp.status_code == 201
    etag = resp.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2
    assert resp.json()["etag"] == etag


def test_get_returns_exact_bytes_and_etag(api: TestClient[Litestar]) -> None:
    """GET returns the body byte for byte as sent (whitespace, key order, escapes) and the ETag."""
    body = b'  {"z":1,   "a" : [ 1,2 ,3 ],\n\t"\\u00e9t\xc3\xa9": "x", "n": 1.50}\n '
    etag = _create(api, DOC, body)
    got = api.get(DOC)
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["etag"] == etag
    assert got.headers["content-type"].startswith("application/json")


def test_update_with_if_match_gives_new_etag(api: TestClient[Litestar]) -> None:
    """PUT with the current ETag updates: 200, a new ETag, and the new body on GET."""
    first = _create(api, DOC, b'{"v": 1}')
    resp = api.put(DOC, content=b'{"v": 2}', headers={"If-Match": first})
    assert resp.status_code == 200
    second = resp.headers["etag"]
    assert second != first
    got = api.get(DOC)
    assert got.content == b'{"v": 2}'
    assert got.headers["etag"] == second


def test_stale_if_match_is_412_and_body_unchanged(api: TestClient[Litestar]) -> None:
    """A write carrying an old ETag loses: 412, and the stored body stays the newer one."""
    first = _create(api, DOC, b'{"v": 1}')
    second = api.put(DOC, content=b'{"v": 2}', headers={"If-Match": first}).headers["etag"]
    _error(api.put(DOC, content=b'{"v": 3}', headers={"If-Match": first}), 412)
    got = api.get(DOC)
    assert got.content == b'{"v": 2}'
    assert got.headers["etag"] == second


def test_if_match_on_missing_document_is_412(api: TestClient[Litestar]) -> None:
    """Updating a document that does not exist fails and creates nothing."""
    _error(api.put(DOC, content=b"{}", headers={"If-Match": '"whatever"'}), 412)
    _error(api.get(DOC), 404)


def test_write_without_precondition_is_428(api: TestClient[Litestar]) -> None:
    """A PUT with neither If-Match nor If-None-Match is refused with 428; nothing is stored."""
    _error(api.put(DOC, content=b"{}"), 428)
    _error(api.get(DOC), 404)
    etag = _create(api, DOC, b'{"v": 1}')
    _error(api.put(DOC, content=b'{"v": 2}'), 428)
    assert api.get(DOC).headers["etag"] == etag


def test_if_none_match_on_existing_is_412(api: TestClient[Litestar]) -> None:
    """Creating over an existing document is 412 and leaves it as it was."""
    etag = _create(api, DOC, b'{"v": 1}')
    _error(api.put(DOC, content=b'{"v": 2}', headers={"If-None-Match": "*"}), 412)
    got = api.get(DOC)
    assert got.content == b'{"v": 1}'
    assert got.headers["etag"] == etag


def test_if_none_match_other_than_star_is_400(api: TestClient[Litestar]) -> None:
    """If-None-Match only means 'create if absent'; any other value is a 400."""
    _error(api.put(DOC, content=b"{}", headers={"If-None-Match": '"abc"'}), 400)
    _error(api.get(DOC), 404)


def test_delete_needs_if_match(api: TestClient[Litestar]) -> None:
    """DELETE: 428 without If-Match, 412 with a stale one, 204 with the current one, then 404."""
    first = _create(api, DOC, b'{"v": 1}')
    second = api.put(DOC, content=b'{"v": 2}', headers={"If-Match": first}).headers["etag"]
    _error(api.delete(DOC), 428)
    _error(api.delete(DOC, headers={"If-Match": first}), 412)
    assert api.get(DOC).content == b'{"v": 2}'
    resp = api.delete(DOC, headers={"If-Match": second})
    assert resp.status_code == 204
    assert resp.content == b""
    _error(api.get(DOC), 404)
    _error(api.delete(DOC, headers={"If-Match": second}), 404)


def test_old_etag_stays_stale_after_recreate(api: TestClient[Litestar]) -> None:
    """A document deleted and created again has a new ETag; the old one no longer matches."""
    first = _create(api, DOC, b"{}")
    assert api.delete(DOC, headers={"If-Match": first}).status_code == 204
    again = _create(api, DOC, b"{}")
    assert again != first
    _error(api.put(DOC, content=b"[]", headers={"If-Match": first}), 412)


def test_invalid_json_is_400(api: TestClient[Litestar]) -> None:
    """Bodies that are not one JSON value are 400 and nothing is stored."""
    for body in (b"", b"   ", b"{", b"{'a': 1}", b"nope", b'{"a":1}{"b":2}', b"\xff\xfe"):
        _error(api.put(DOC, content=body, headers={"If-None-Match": "*"}), 400)
    _error(api.get(DOC), 404)


def test_invalid_json_update_keeps_old_body(api: TestClient[Litestar]) -> None:
    """A bad update is refused and the stored document and ETag are untouched."""
    etag = _create(api, DOC, b'{"v": 1}')
    _error(api.put(DOC, content=b'{"v": ', headers={"If-Match": etag}), 400)
    got = api.get(DOC)
    assert (got.content, got.headers["etag"]) == (b'{"v": 1}', etag)


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    """A client on a box whose document limit is 100 bytes, with `loc1`."""
    cfg = make_config(tmp_path / "small", "[api]\nmax_document_bytes = 100\n")
    token = make_token(cfg)
    with TestClient(app=create_app(cfg)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        loc = {"id": "loc1", "account": "acme", "geo_prefix": "u4pr", "name": "S"}
        assert c.post("/v1/locations", json=loc).status_code == 201
        yield c


def test_document_over_limit_is_413(small_client: TestClient[Litestar]) -> None:
    """A body over api.max_document_bytes is 413; one exactly at the limit is accepted."""
    at_limit = b'"' + b"x" * 98 + b'"'
    assert len(at_limit) == 100
    assert (
        small_client.put(DOC, content=at_limit, headers={"If-None-Match": "*"}).status_code == 201
    )
    other = "/v1/locations/loc1/docs/inspections/big"
    _error(small_client.put(other, content=at_limit + b" ", headers={"If-None-Match": "*"}), 413)
    _error(
        small_client.put(
            other, content=b"[" + b"1," * 5000 + b"1]", headers={"If-None-Match": "*"}
        ),
        413,
    )
    _error(small_client.get(other), 404)


def test_update_over_limit_is_413_and_keeps_old(small_client: TestClient[Litestar]) -> None:
    """An oversized update is refused and the stored body survives."""
    etag = _create(small_client, DOC, b"{}")
    _error(small_client.put(DOC, content=b'"' + b"y" * 200 + b'"', headers={"If-Match": etag}), 413)
    assert small_client.get(DOC).content == b"{}"


def test_list_pages_through_collection(api: TestClient[Litestar]) -> None:
    """Listing with limit and next_cursor visits every key once, in key order, across pages."""
    keys = [f"k{i:03d}" for i in range(23)]
    for k in reversed(keys):
        _create(api, f"/v1/locations/loc1/docs/walk/{k}", f'{{"n": "{k}"}}'.encode())
    _create(api, "/v1/locations/loc1/docs/elsewhere/k000", b"{}")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor is not None:
            params["cursor"] = cursor
        resp = api.get("/v1/locations/loc1/docs/walk", params=params)
        assert resp.status_code == 200
        page = resp.json()
        pages += 1
        assert len(page["items"]) <= 5
        for item in page["items"]:
            assert item["body"] == {"n": item["key"]}
            assert item["etag"].startswith('"')
        seen.extend(item["key"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert seen == keys
    assert pages == 5


def test_list_exact_multiple_of_limit_ends_cleanly(api: TestClient[Litestar]) -> None:
    """When the collection fills the last page exactly, next_cursor is null there."""
    for k in ("a", "b", "c", "d"):
        _create(api, f"/v1/locations/loc1/docs/even/{k}", b"1")
    first = api.get("/v1/locations/loc1/docs/even", params={"limit": 2}).json()
    assert [i["key"] for i in first["items"]] == ["a", "b"]
    second = api.get(
        "/v1/locations/loc1/docs/even", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [i["key"] for i in second["items"]] == ["c", "d"]
    assert second["next_cursor"] is None


def test_list_of_empty_collection(api: TestClient[Litestar]) -> None:
    """A collection with nothing in it lists as empty with no cursor."""
    assert api.get("/v1/locations/loc1/docs/none").json() == {"items": [], "next_cursor": None}


def test_list_rejects_bad_limit(api: TestClient[Litestar]) -> None:
    """A limit outside 1..1000 is a 400."""
    for limit in ("0", "1001", "-1", "many", "null", ""):
        _error(api.get("/v1/locations/loc1/docs/c", params={"limit": limit}), 400)
    _error(api.get("/v1/locations/loc1/docs/c?cursor=%C3%BF"), 400)


def test_deeply_nested_json_is_400_and_not_stored(api: TestClient[Litestar]) -> None:
    """JSON nested past the decoder's depth is a 400 naming it; no document is written."""
    deep = b"[" * 5000 + b"]" * 5000
    url = "/v1/locations/loc1/docs/c/deep"
    body = _error(api.put(url, content=deep, headers={"If-None-Match": "*"}), 400)
    assert "nested too deeply" in body["message"]
    _error(api.get(url), 404)


def test_traversal_in_collection_or_key_is_refused(api: TestClient[Litestar]) -> None:
    """'..' and backslashes in collection or key are 400 JSON; an encoded slash is decoded
    before routing, so it splits the path into other segments: a document that is not
    there (404), never a file."""
    refused = [
        "/v1/locations/loc1/docs/%2e%2e/k",
        "/v1/locations/loc1/docs/c/%2e%2e",
        "/v1/locations/loc1/docs/%2E%2E/%2E%2E",
        "/v1/locations/loc1/docs/c/a..b",
        "/v1/locations/loc1/docs/c/%5c..%5cx",
        "/v1/locations/%2e%2e/docs/c/k",
        "/v1/locations/loc1/docs/c/k%0A",
        "/v1/locations/loc1%0A/docs/c/k",
    ]
    elsewhere = [
        "/v1/locations/loc1/docs/a%2Fb/k",
        "/v1/locations/loc1/docs/c/a%2Fb",
        "/v1/locations/loc1/docs/c/..%2F..%2Fkeys.db",
        "/v1/locations/loc1/docs/c/%2e%2e%2f%2e%2e%2fx",
    ]
    for urls, status in ((refused, 400), (elsewhere, 404)):
        for url in urls:
            for resp in (
                api.get(url),
                api.put(url, content=b"{}", headers={"If-None-Match": "*"}),
                api.delete(url, headers={"If-Match": "*"}),
            ):
                assert resp.status_code == status, (url, resp.status_code, resp.text)
                assert resp.headers["content-type"].startswith("application/json"), url
                assert resp.json()["status"] == status
    _error(api.get("/v1/locations/loc1/docs/%2e%2e"), 400)
    _error(api.get("/v1/locations/loc1/docs/c%0A"), 400)
    _error(api.get("/v1/locations/loc1/docs/a%2Fb"), 404)
    assert api.get("/v1/locations/loc1/docs/c").json()["items"] == []


def test_dots_inside_a_key_are_fine(api: TestClient[Litestar]) -> None:
    """A key with single dots and other allowed punctuation works end to end."""
    url = "/v1/locations/loc1/docs/photos/img.2024-01-02:roof@north=1+a"
    etag = _create(api, url, b'{"ok": 1}')
    assert api.get(url).headers["etag"] == etag


def test_unknown_location_is_404(api: TestClient[Litestar]) -> None:
    """Every document verb against a location that does not exist is a JSON 404."""
    url = "/v1/locations/nowhere/docs/c/k"
    _error(api.get(url), 404)
    _error(api.put(url, content=b"{}", headers={"If-None-Match": "*"}), 404)
    _error(api.delete(url, headers={"If-Match": "*"}), 404)
    _error(api.get("/v1/locations/nowhere/docs/c"), 404)


def test_documents_are_per_location(api: TestClient[Litestar]) -> None:
    """The same collection/key in two locations are two independent documents."""
    api.post(
        "/v1/locations", json={"id": "loc2", "account": "acme", "geo_prefix": "u4pr", "name": "T"}
    )
    _create(api, DOC, b"1")
    _error(api.get("/v1/locations/loc2/docs/inspections/roof"), 404)
    _create(api, "/v1/locations/loc2/docs/inspections/roof", b"2")
    assert api.get(DOC).content == b"1"
