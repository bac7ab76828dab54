"""`/v1/assets` (listing, records, downloads with Range) and the project markdown export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.config import FieldboxConfig
from tests.appliance.test_api_uploads import make_location, upload

DATA = bytes(range(100))


@pytest.fixture
def api(client: TestClient[Litestar]) -> TestClient[Litestar]:
    """The client, with locations `loc1` and `loc2` created."""
    make_location(client, "loc1")
    make_location(client, "loc2")
    return client


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["message"]
    return body


def _ids(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [item["id"] for item in resp.json()["items"]]


def _walk(api: TestClient[Litestar], limit: int, **params: str) -> list[str]:
    """Follow next_cursor to the end; every id listed, in order."""
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(50):
        query: dict[str, Any] = {"limit": limit, **params}
        if cursor is not None:
            query["cursor"] = cursor
        resp = api.get("/v1/assets", params=query)
        page = resp.json()
        assert len(page["items"]) <= limit
        ids.extend(_ids(resp))
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("next_cursor never ended")


def test_list_is_newest_first(api: TestClient[Litestar]) -> None:
    """Assets are listed newest first, across locations."""
    a = upload(api, b"first", location="loc1")
    b = upload(api, b"second", location="loc2")
    c = upload(api, b"third", location="loc1")
    assert _ids(api.get("/v1/assets")) == [c, b, a]


def test_same_bytes_twice_is_one_entry(api: TestClient[Litestar]) -> None:
    """Uploading identical bytes twice lists one entry (the newest); both records stay readable."""
    old = upload(api, b"same bytes", filename="a.bin")
    other = upload(api, b"different", filename="b.bin")
    new = upload(api, b"same bytes", filename="c.bin")
    assert _ids(api.get("/v1/assets")) == [new, other]
    assert api.get(f"/v1/assets/{old}").status_code == 200
    assert api.get(f"/v1/assets/{old}/content").content == b"same bytes"


def test_same_bytes_in_two_locations_is_one_entry(api: TestClient[Litestar]) -> None:
    """Dedup spans locations in the box-wide listing; the location filter still shows each."""
    first = upload(api, b"shared", location="loc1")
    second = upload(api, b"shared", location="loc2")
    assert _ids(api.get("/v1/assets")) == [second]
    assert _ids(api.get("/v1/assets", params={"location": "loc1"})) == [first]


def test_project_filter(api: TestClient[Litestar]) -> None:
    """projectId=all lists every project; projectId=p lists only that project's assets."""
    p1 = upload(api, b"one", project="p1")
    p2 = upload(api, b"two", project="p2")
    none = upload(api, b"three")
    p1b = upload(api, b"four", project="p1", location="loc2")
    assert _ids(api.get("/v1/assets", params={"projectId": "p1"})) == [p1b, p1]
    assert _ids(api.get("/v1/assets", params={"projectId": "p2"})) == [p2]
    assert _ids(api.get("/v1/assets", params={"projectId": "all"})) == [p1b, none, p2, p1]
    assert _ids(api.get("/v1/assets")) == [p1b, none, p2, p1]
    assert _ids(api.get("/v1/assets", params={"projectId": "p9"})) == []
    for item in api.get("/v1/assets", params={"projectId": "p1"}).json()["items"]:
        assert item["project"] == "p1"


def test_location_filter(api: TestClient[Litestar]) -> None:
    """location=X lists only that location's assets."""
    a = upload(api, b"a", location="loc1")
    b = upload(api, b"b", location="loc2")
    c = upload(api, b"c", location="loc1")
    assert _ids(api.get("/v1/assets", params={"location": "loc1"})) == [c, a]
    assert _ids(api.get("/v1/assets", params={"location": "loc2"})) == [b]


def test_cursor_pagination(api: TestClient[Litestar]) -> None:
    """Following next_cursor with a small limit lists every asset once, newest first."""
    made = [upload(api, f"file {i}".encode(), location=f"loc{1 + i % 2}") for i in range(7)]
    upload(api, b"file 3", location="loc2")  # a newer copy of made[3] replaces it
    want = _ids(api.get("/v1/assets", params={"limit": 100}))
    assert len(want) == 7 and made[3] not in want
    for limit in (1, 2, 3):
        assert _walk(api, limit) == want
    in_loc1 = [m for m in reversed(made) if m.startswith("loc1.")]
    assert len(in_loc1) == 4
    assert _walk(api, 2, location="loc1") == in_loc1


def test_bad_list_parameters_are_400(api: TestClient[Litestar]) -> None:
    """A foreign cursor, unsafe projectId or location, or a limit out of range is 400."""
    for params in (
        {"cursor": "not-a-cursor!!"},
        {"cursor": "WzEsMl0"},
        {"projectId": "../x"},
        {"location": ".."},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "x"},
    ):
        _error(api.get("/v1/assets", params=params), 400)


def test_unknown_location_filter_is_404(api: TestClient[Litestar]) -> None:
    """Filtering by a location that does not exist is 404, not an empty list."""
    _error(api.get("/v1/assets", params={"location": "nowhere"}), 404)


def test_get_asset_record(api: TestClient[Litestar]) -> None:
    """GET /v1/assets/{id} describes the asset and links its content."""
    asset_id = upload(api, DATA, filename="photo.jpg", project="p1", kind="image", note="north")
    asset = api.get(f"/v1/assets/{asset_id}").json()
    assert asset["id"] == asset_id
    assert asset["location"] == "loc1"
    assert asset["project"] == "p1"
    assert asset["kind"] == "image"
    assert asset["filename"] == "photo.jpg"
    assert asset["mime_type"] == "image/jpeg"
    assert asset["size"] == len(DATA)
    assert asset["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert asset["metadata"]["note"] == "north"
    assert asset["content_url"] == f"/v1/assets/{asset_id}/content"


def test_content_download(api: TestClient[Litestar]) -> None:
    """The content is exactly the uploaded bytes, with length, type and a digest ETag."""
    asset_id = upload(api, DATA, filename="photo.jpg")
    resp = api.get(f"/v1/assets/{asset_id}/content")
    assert resp.status_code == 200
    assert resp.content == DATA
    assert resp.headers["content-length"] == str(len(DATA))
    assert resp.headers["content-type"].startswith("image/jpeg")
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["etag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert "photo.jpg" in resp.headers["content-disposition"]


def test_head_on_content_gives_size_without_body(api: TestClient[Litestar]) -> None:
    """HEAD on the content (what download managers do first) gives the size and no body."""
    asset_id = upload(api, DATA)
    resp = api.head(f"/v1/assets/{asset_id}/content")
    assert resp.status_code == 200
    assert resp.headers["content-length"] == str(len(DATA))
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.content == b""


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=-5", 95, 99),
        ("bytes=10-", 10, 99),
        ("bytes=90-500", 90, 99),
        ("BYTES=0-9", 0, 9),
        # Past any file: the end is the last byte, a suffix is the whole file (RFC 9110).
        ("bytes=0-" + "9" * 5000, 0, 99),
        ("bytes=-" + "9" * 5000, 0, 99),
    ],
)
def test_range_requests(api: TestClient[Litestar], header: str, start: int, end: int) -> None:
    """A single byte range is answered 206 with exactly those bytes and a Content-Range."""
    asset_id = upload(api, DATA)
    resp = api.get(f"/v1/assets/{asset_id}/content", headers={"Range": header})
    assert resp.status_code == 206
    assert resp.content == DATA[start : end + 1]
    assert resp.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert resp.headers["content-length"] == str(end - start + 1)


def test_unsatisfiable_range_is_416_json(api: TestClient[Litestar]) -> None:
    """A range wholly past the end is 416 JSON with `Content-Range: bytes */size`."""
    asset_id = upload(api, DATA)
    for header in ("bytes=100-", "bytes=500-600", "bytes=-0"):
        resp = api.get(f"/v1/assets/{asset_id}/content", headers={"Range": header})
        _error(resp, 416)
        assert resp.headers["content-range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=5-3",  # last-pos before first-pos: invalid, not unsatisfiable (14.1.2)
        "bytes=0-1,5-6",  # several ranges: we may send the whole file
        "bytes=-",
        "bytes=²-5",
        "bytes=0-²",
        "bytes=0x10-",
        "bytes= 0-5",
        "items=0-5",
        "bytes=0-5\x00",
        "bytes",
    ],
)
def test_malformed_range_is_ignored(api: TestClient[Litestar], header: str) -> None:
    """A Range that is not one valid byte-range-spec is ignored: 200 and the whole file."""
    asset_id = upload(api, DATA)
    resp = api.get(f"/v1/assets/{asset_id}/content", headers={b"Range": header.encode("latin-1")})
    assert resp.status_code == 200, resp.text
    assert resp.content == DATA
    assert "content-range" not in resp.headers


def test_range_starting_past_any_file_is_416(api: TestClient[Litestar]) -> None:
    """A first-pos of 5000 digits is a valid range past the end: 416, not a 500."""
    asset_id = upload(api, DATA)
    resp = api.get(f"/v1/assets/{asset_id}/content", headers={"Range": "bytes=" + "9" * 5000 + "-"})
    _error(resp, 416)
    assert resp.headers["content-range"] == f"bytes */{len(DATA)}"


def test_bytes_missing_from_the_box_is_404_json(
    api: TestClient[Litestar], cfg: FieldboxConfig
) -> None:
    """An asset whose bytes are not on the box (a box restored from S3 gets the rows, not
    the blobs) answers 404 JSON saying so, not a 500; its record still reads."""
    asset_id = upload(api, DATA)
    (blob,) = Path(cfg.data_dir).rglob(hashlib.sha256(DATA).hexdigest())
    blob.unlink()
    for method in (api.get, api.head):
        resp = method(f"/v1/assets/{asset_id}/content")
        assert resp.status_code == 404
    body = _error(api.get(f"/v1/assets/{asset_id}/content"), 404)
    assert "not on this box" in body["message"]
    assert api.get(f"/v1/assets/{asset_id}").status_code == 200


def test_malformed_asset_id_is_400(api: TestClient[Litestar]) -> None:
    """Asset ids that are not `{location}.{20 hex}` are 400, for the record and the content."""
    for bad in (
        "nope",
        "loc1.xyz",
        "loc1.",
        "loc1.0123456789ABCDEF0123",
        ".0123456789abcdef0123",
        "%2e%2e.0123456789abcdef0123",
        "-x.0123456789abcdef0123",
    ):
        _error(api.get(f"/v1/assets/{bad}"), 400)
        _error(api.get(f"/v1/assets/{bad}/content"), 400)
    # A trailing newline: `$` in a pattern matches before it, fullmatch does not.
    _error(api.get("/v1/assets/loc1.0123456789abcdef0123%0A"), 400)
    _error(api.get("/v1/assets/loc1%0A.0123456789abcdef0123/content"), 400)
    # An encoded slash is decoded before routing: no route has that many segments.
    for path in ("..%2F..%2Fkeys.db", "loc1%2F..%2F..%2Fkeys.db/content"):
        _error(api.get(f"/v1/assets/{path}"), 404)


def test_unknown_asset_is_404(api: TestClient[Litestar]) -> None:
    """A well-formed id that names no asset (or no location) is 404."""
    for missing in ("loc1.0123456789abcdef0123", "gone.0123456789abcdef0123"):
        _error(api.get(f"/v1/assets/{missing}"), 404)
        _error(api.get(f"/v1/assets/{missing}/content"), 404)


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    assert text.startswith("---\n")
    head, sep, body = text[4:].partition("\n---\n")
    assert sep, "front matter is not closed"
    fields: dict[str, Any] = {}
    for line in head.splitlines():
        key, colon, value = line.partition(": ")
        assert colon, line
        fields[key] = json.loads(value)
    return fields, body


def test_project_markdown(api: TestClient[Litestar]) -> None:
    """The project export has front matter and lists only that project's documents and assets."""
    docs = {
        "inspections/roof": b'{"project": "p1", "finding": "loose tiles"}',
        "notes/gate": b'{"projectId": "p1", "finding": "rusty hinge"}',
        "inspections/cellar": b'{"project": "p2", "finding": "damp walls"}',
        "inspections/loose": b'{"finding": "no project at all"}',
    }
    for path, doc in docs.items():
        resp = api.put(
            f"/v1/locations/loc1/docs/{path}", content=doc, headers={"If-None-Match": "*"}
        )
        assert resp.status_code == 201
    mine = upload(api, b"p1 photo", filename="roof-photo.jpg", project="p1")
    upload(api, b"p2 photo", filename="cellar-photo.jpg", project="p2")
    upload(api, b"elsewhere", filename="other-site.jpg", project="p1", location="loc2")

    resp = api.get("/v1/locations/loc1/projects/p1/markdown")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/markdown")
    fields, body = _front_matter(resp.text)
    assert fields["project"] == "p1"
    assert fields["location"] == "loc1"
    assert fields["documents"] == 2
    assert fields["assets"] == 1
    assert "loose tiles" in body and "rusty hinge" in body
    assert "roof" in body and "gate" in body
    assert "damp walls" not in body and "no project at all" not in body
    assert "roof-photo.jpg" in body
    assert f"/v1/assets/{mine}/content" in body
    assert "cellar-photo.jpg" not in body and "other-site.jpg" not in body


def test_project_markdown_of_empty_project(api: TestClient[Litestar]) -> None:
    """A project with nothing in it still renders, with zero counts."""
    resp = api.get("/v1/locations/loc1/projects/empty/markdown")
    assert resp.status_code == 200
    fields, _ = _front_matter(resp.text)
    assert (fields["project"], fields["documents"], fields["assets"]) == ("empty", 0, 0)


def test_project_markdown_errors(api: TestClient[Litestar]) -> None:
    """An unknown location is 404; an unsafe project or location id is 400."""
    _error(api.get("/v1/locations/nowhere/projects/p1/markdown"), 404)
    _error(api.get("/v1/locations/loc1/projects/%2e%2e/markdown"), 400)
    _error(api.get("/v1/locations/%2e%2e/projects/p1/markdown"), 400)


def test_assets_need_a_key(api: TestClient[Litestar]) -> None:
    """Listing and downloading assets need a field key."""
    asset_id = upload(api, b"secret")
    del api.headers["Authorization"]
    _error(api.get("/v1/assets"), 401)
    _error(api.get(f"/v1/assets/{asset_id}/content"), 401)
