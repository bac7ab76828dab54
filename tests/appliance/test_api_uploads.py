"""`/v1/uploads`: tus 1.0.0 creation, offsets, checksums, termination, and the asset at the end."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.app import create_app
from tests.conftest import make_config, make_token

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def metadata(**fields: str) -> str:
    """An Upload-Metadata header value: `key base64,key base64`."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def make_location(client: TestClient[Litestar], loc_id: str = "loc1") -> None:
    """Create a location through the API."""
    resp = client.post(
        "/v1/locations",
        json={"id": loc_id, "account": "acme", "geo_prefix": "u4pr", "name": f"Site {loc_id}"},
    )
    assert resp.status_code == 201, resp.text


def tus_create(
    client: TestClient[Litestar],
    length: int,
    *,
    location: str = "loc1",
    filename: str = "clip.bin",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    **meta: str,
) -> httpx.Response:
    """POST /v1/uploads with proper tus headers (and a first chunk when `body` is given)."""
    hdrs = {
        **TUS,
        "Upload-Length": str(length),
        "Upload-Metadata": metadata(location=location, filename=filename, **meta),
    }
    if body is not None:
        hdrs["Content-Type"] = OCTETS
    hdrs.update(headers or {})
    return client.post("/v1/uploads", content=body or b"", headers=hdrs)


def tus_patch(
    client: TestClient[Litestar],
    url: str,
    offset: int,
    data: bytes,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """PATCH one chunk at `offset` with proper tus headers."""
    hdrs = {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **(headers or {})}
    return client.patch(url, content=data, headers=hdrs)


def upload(
    client: TestClient[Litestar],
    data: bytes,
    *,
    chunk: int = 1 << 20,
    location: str = "loc1",
    filename: str = "clip.bin",
    **meta: str,
) -> str:
    """Upload `data` in chunks; return the asset id it became."""
    created = client.post(
        "/v1/uploads",
        headers={
            **TUS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(location=location, filename=filename, **meta),
        },
    )
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    offset = 0
    last = created
    while offset < len(data):
        last = tus_patch(client, url, offset, data[offset : offset + chunk])
        assert last.status_code == 204, last.text
        offset = int(last.headers["upload-offset"])
    asset_id = last.headers.get("fieldbox-asset-id")
    assert isinstance(asset_id, str) and asset_id, dict(last.headers)
    return asset_id


def checksum(algo: str, data: bytes) -> str:
    """An Upload-Checksum header value."""
    return f"{algo} {base64.b64encode(hashlib.new(algo, data).digest()).decode()}"


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["message"]
    return body


def _offset(client: TestClient[Litestar], url: str) -> int:
    resp = client.head(url, headers=TUS)
    assert resp.status_code == 200
    return int(resp.headers["upload-offset"])


@pytest.fixture
def api(client: TestClient[Litestar]) -> TestClient[Litestar]:
    """The client, with location `loc1` created."""
    make_location(client)
    return client


def test_options_advertises_capabilities(client: TestClient[Litestar]) -> None:
    """OPTIONS (no key needed) advertises version, extensions, max size and checksum algorithms."""
    del client.headers["Authorization"]
    resp = client.options("/v1/uploads")
    assert resp.status_code == 204
    assert resp.headers["tus-resumable"] == "1.0.0"
    assert "1.0.0" in resp.headers["tus-version"].split(",")
    extensions = {e.strip() for e in resp.headers["tus-extension"].split(",")}
    assert {
        "creation",
        "creation-with-upload",
        "checksum",
        "termination",
        "expiration",
    } <= extensions
    assert int(resp.headers["tus-max-size"]) == 20 * 1024**3
    algos = {a.strip() for a in resp.headers["tus-checksum-algorithm"].split(",")}
    assert {"sha1", "sha256"} <= algos


def test_create_gives_location_and_head_gives_offsets(api: TestClient[Litestar]) -> None:
    """POST answers 201 with a Location; HEAD on it reports offset 0 and the declared length."""
    resp = tus_create(api, 10)
    assert resp.status_code == 201
    assert resp.headers["tus-resumable"] == "1.0.0"
    url = resp.headers["location"]
    assert url.startswith("/v1/uploads/")
    assert resp.headers["upload-offset"] == "0"
    assert "upload-expires" in resp.headers
    head = api.head(url, headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == "10"
    assert head.headers["cache-control"] == "no-store"
    assert "fieldbox-asset-id" not in head.headers


def test_post_without_tus_resumable_is_412(api: TestClient[Litestar]) -> None:
    """A client that does not speak tus 1.0.0 gets 412 and the version the server speaks."""
    resp = api.post(
        "/v1/uploads",
        headers={"Upload-Length": "3", "Upload-Metadata": metadata(location="loc1", filename="a")},
    )
    _error(resp, 412)
    assert resp.headers["tus-version"] == "1.0.0"
    _error(tus_create(api, 3, headers={"Tus-Resumable": "0.2.2"}), 412)


def test_expired_upload_is_gone(tmp_path: Path) -> None:
    """An unfinished upload past its expiry answers 410 and takes no more bytes."""
    cfg = make_config(tmp_path / "brief", "[api]\nupload_expiry_hours = 0.00000001\n")
    token = make_token(cfg)
    with TestClient(app=create_app(cfg)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        make_location(c)
        url = tus_create(c, 3).headers["location"]
        assert c.head(url, headers=TUS).status_code == 410
        _error(tus_patch(c, url, 0, b"abc"), 410)
        assert c.get("/v1/assets").json()["items"] == []


def test_missing_or_bad_upload_length_is_400(api: TestClient[Litestar]) -> None:
    """Upload-Length is required and must be a non-negative integer."""
    meta = metadata(location="loc1", filename="a")
    _error(api.post("/v1/uploads", headers={**TUS, "Upload-Metadata": meta}), 400)
    for bad in ("-1", "abc", "1.5", ""):
        resp = api.post(
            "/v1/uploads", headers={**TUS, "Upload-Metadata": meta, "Upload-Length": bad}
        )
        _error(resp, 400)


def test_deferred_length_is_refused(api: TestClient[Litestar]) -> None:
    """Upload-Defer-Length is not advertised, so it is a 400."""
    resp = api.post(
        "/v1/uploads",
        headers={
            **TUS,
            "Upload-Defer-Length": "1",
            "Upload-Metadata": metadata(location="loc1", filename="a"),
        },
    )
    _error(resp, 400)


@pytest.fixture
def small_api(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    """A box whose uploads may be at most 1000 bytes, with `loc1`."""
    cfg = make_config(tmp_path / "small", "[api]\nmax_upload_bytes = 1000\n")
    token = make_token(cfg)
    with TestClient(app=create_app(cfg)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        make_location(c)
        yield c


def test_over_max_size_is_413(small_api: TestClient[Litestar]) -> None:
    """An Upload-Length over Tus-Max-Size is 413; exactly the maximum is accepted."""
    assert small_api.options("/v1/uploads").headers["tus-max-size"] == "1000"
    _error(tus_create(small_api, 1001), 413)
    assert tus_create(small_api, 1000).status_code == 201


def test_missing_location_or_filename_is_400(api: TestClient[Litestar]) -> None:
    """Metadata must name the location and the filename."""
    base = {**TUS, "Upload-Length": "3"}
    _error(api.post("/v1/uploads", headers=base), 400)
    only_name = metadata(filename="a.bin")
    _error(api.post("/v1/uploads", headers={**base, "Upload-Metadata": only_name}), 400)
    only_loc = metadata(location="loc1")
    _error(api.post("/v1/uploads", headers={**base, "Upload-Metadata": only_loc}), 400)
    empty_name = metadata(location="loc1", filename="")
    _error(api.post("/v1/uploads", headers={**base, "Upload-Metadata": empty_name}), 400)


def test_unknown_location_is_404(api: TestClient[Litestar]) -> None:
    """An upload into a location that does not exist is 404."""
    _error(tus_create(api, 3, location="nowhere"), 404)


def test_unsafe_location_or_project_is_400(api: TestClient[Litestar]) -> None:
    """Location and project in metadata are validated like every other id."""
    _error(tus_create(api, 3, location=".."), 400)
    _error(tus_create(api, 3, location="../../etc"), 400)
    _error(tus_create(api, 3, project="../p"), 400)
    _error(tus_create(api, 3, sha256="not-a-digest"), 400)


def test_malformed_metadata_is_400(api: TestClient[Litestar]) -> None:
    """Upload-Metadata values that are not base64, or are not key/value pairs, are 400."""
    base = {**TUS, "Upload-Length": "3"}
    for raw in (
        "location !!!notbase64,filename YS5iaW4=",
        "location bG9jMQ==,filename YS5iaW4=,",
        "location bG9jMQ== extra,filename YS5iaW4=",
        "location bG9jMQ,filename YS5iaW4=",
        "location /w==,filename YS5iaW4=",
    ):
        _error(api.post("/v1/uploads", headers={**base, "Upload-Metadata": raw}), 400)


def test_filename_path_is_stripped(api: TestClient[Litestar]) -> None:
    """A filename with directories keeps only its last part."""
    asset_id = upload(api, b"abc", filename="../../etc/passwd")
    assert api.get(f"/v1/assets/{asset_id}").json()["filename"] == "passwd"


def test_chunked_upload_becomes_an_asset(api: TestClient[Litestar]) -> None:
    """Chunks appended in order complete the upload; the finished HEAD names the asset."""
    data = bytes(range(256)) * 40
    created = tus_create(api, len(data), filename="scan.bin", project="p1")
    url = created.headers["location"]
    offset = 0
    for size in (1000, 3000, 1, 5000):
        resp = tus_patch(api, url, offset, data[offset : offset + size])
        assert resp.status_code == 204
        offset += size
        assert resp.headers["upload-offset"] == str(offset)
        assert _offset(api, url) == offset
    final = tus_patch(api, url, offset, data[offset:])
    assert final.status_code == 204
    assert final.headers["upload-offset"] == str(len(data))
    asset_id = final.headers["fieldbox-asset-id"]
    head = api.head(url, headers=TUS)
    assert head.headers["fieldbox-asset-id"] == asset_id
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(len(data))
    asset = api.get(f"/v1/assets/{asset_id}").json()
    assert asset["sha256"] == hashlib.sha256(data).hexdigest()
    assert asset["size"] == len(data)
    assert (asset["filename"], asset["project"], asset["location"]) == ("scan.bin", "p1", "loc1")
    assert api.get(f"/v1/assets/{asset_id}/content").content == data


def test_patch_wrong_content_type_is_415(api: TestClient[Litestar]) -> None:
    """PATCH bodies must be application/offset+octet-stream; others are 415 and not kept."""
    url = tus_create(api, 3).headers["location"]
    resp = tus_patch(api, url, 0, b"abc", headers={"Content-Type": "application/json"})
    _error(resp, 415)
    assert _offset(api, url) == 0


def test_patch_without_tus_resumable_is_412(api: TestClient[Litestar]) -> None:
    """PATCH and HEAD need Tus-Resumable too."""
    url = tus_create(api, 3).headers["location"]
    resp = api.patch(url, content=b"abc", headers={"Upload-Offset": "0", "Content-Type": OCTETS})
    _error(resp, 412)
    assert api.head(url).status_code == 412
    assert _offset(api, url) == 0


def test_offset_mismatch_is_409(api: TestClient[Litestar]) -> None:
    """A PATCH at the wrong offset is 409 and writes nothing."""
    url = tus_create(api, 10).headers["location"]
    _error(tus_patch(api, url, 3, b"abc"), 409)
    assert tus_patch(api, url, 0, b"abcd").status_code == 204
    _error(tus_patch(api, url, 0, b"abcd"), 409)
    _error(tus_patch(api, url, 5, b"x"), 409)
    assert _offset(api, url) == 4


def test_missing_upload_offset_is_400(api: TestClient[Litestar]) -> None:
    """PATCH without Upload-Offset is 400."""
    url = tus_create(api, 3).headers["location"]
    resp = api.patch(url, content=b"abc", headers={**TUS, "Content-Type": OCTETS})
    _error(resp, 400)
    assert _offset(api, url) == 0


def test_patch_past_length_is_413_and_keeps_nothing(api: TestClient[Litestar]) -> None:
    """A chunk that would run past Upload-Length is 413 and none of it is kept."""
    url = tus_create(api, 10).headers["location"]
    assert tus_patch(api, url, 0, b"01234").status_code == 204
    _error(tus_patch(api, url, 5, b"56789X"), 413)
    assert _offset(api, url) == 5
    final = tus_patch(api, url, 5, b"56789")
    assert final.status_code == 204
    asset_id = final.headers["fieldbox-asset-id"]
    assert api.get(f"/v1/assets/{asset_id}/content").content == b"0123456789"


def test_streamed_body_past_length_is_413_and_keeps_nothing(api: TestClient[Litestar]) -> None:
    """Without a Content-Length (chunked transfer), overrunning Upload-Length is still 413."""
    url = tus_create(api, 4).headers["location"]

    def body() -> Iterator[bytes]:
        yield b"ab"
        yield b"cdef"

    resp = api.patch(
        url, content=body(), headers={**TUS, "Upload-Offset": "0", "Content-Type": OCTETS}
    )
    _error(resp, 413)
    assert _offset(api, url) == 0


def test_checksum_mismatch_is_460_and_offset_unchanged(api: TestClient[Litestar]) -> None:
    """A chunk whose Upload-Checksum does not match is discarded with 460."""
    url = tus_create(api, 6).headers["location"]
    assert (
        tus_patch(api, url, 0, b"abc", {"Upload-Checksum": checksum("sha1", b"abc")}).status_code
        == 204
    )
    resp = tus_patch(api, url, 3, b"def", {"Upload-Checksum": checksum("sha1", b"xyz")})
    assert resp.status_code == 460
    assert resp.json()["status"] == 460
    assert _offset(api, url) == 3
    resp = tus_patch(api, url, 3, b"def", {"Upload-Checksum": checksum("sha256", b"def")})
    assert resp.status_code == 204
    asset_id = resp.headers["fieldbox-asset-id"]
    assert api.get(f"/v1/assets/{asset_id}/content").content == b"abcdef"


def test_correct_checksums_are_accepted(api: TestClient[Litestar]) -> None:
    """sha1 and sha256 chunk checksums that match are accepted."""
    for algo in ("sha1", "sha256"):
        data = f"payload-{algo}".encode()
        url = tus_create(api, len(data)).headers["location"]
        resp = tus_patch(api, url, 0, data, {"Upload-Checksum": checksum(algo, data)})
        assert resp.status_code == 204, (algo, resp.text)
        assert resp.headers["upload-offset"] == str(len(data))


def test_unknown_checksum_algorithm_is_400(api: TestClient[Litestar]) -> None:
    """An algorithm the server does not advertise is 400 and nothing is written."""
    url = tus_create(api, 3).headers["location"]
    _error(tus_patch(api, url, 0, b"abc", {"Upload-Checksum": "crc32 AAAA"}), 400)
    _error(tus_patch(api, url, 0, b"abc", {"Upload-Checksum": "sha1 !!!"}), 400)
    assert _offset(api, url) == 0


def test_creation_with_upload(api: TestClient[Litestar]) -> None:
    """POST with a body stores the first bytes; the rest follows by PATCH."""
    data = b"first-part|second-part"
    resp = tus_create(api, len(data), body=data[:11])
    assert resp.status_code == 201
    assert resp.headers["upload-offset"] == "11"
    url = resp.headers["location"]
    assert _offset(api, url) == 11
    final = tus_patch(api, url, 11, data[11:])
    asset_id = final.headers["fieldbox-asset-id"]
    assert api.get(f"/v1/assets/{asset_id}/content").content == data


def test_creation_with_whole_upload(api: TestClient[Litestar]) -> None:
    """POST carrying every byte finishes at once: the 201 already names the asset."""
    resp = tus_create(api, 5, body=b"whole")
    assert resp.status_code == 201
    asset_id = resp.headers["fieldbox-asset-id"]
    assert api.get(f"/v1/assets/{asset_id}/content").content == b"whole"


def test_zero_length_upload_becomes_an_asset(api: TestClient[Litestar]) -> None:
    """An empty file needs no PATCH: the POST makes the asset, which downloads as empty."""
    resp = tus_create(api, 0, filename="empty.txt")
    assert resp.status_code == 201
    asset_id = resp.headers["fieldbox-asset-id"]
    asset = api.get(f"/v1/assets/{asset_id}").json()
    assert asset["size"] == 0
    assert asset["sha256"] == hashlib.sha256(b"").hexdigest()
    content = api.get(f"/v1/assets/{asset_id}/content")
    assert content.status_code == 200
    assert content.content == b""


def test_declared_sha256_matching_is_accepted(api: TestClient[Litestar]) -> None:
    """A whole-file sha256 in metadata that matches the bytes is accepted."""
    data = b"exact bytes"
    asset_id = upload(api, data, chunk=4, sha256=hashlib.sha256(data).hexdigest())
    assert api.get(f"/v1/assets/{asset_id}").json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_declared_sha256_mismatch_is_refused(api: TestClient[Litestar]) -> None:
    """When the finished file's sha256 is not the declared one: 460, and the upload is gone."""
    data = b"these are not the bytes you declared"
    url = tus_create(api, len(data), sha256=hashlib.sha256(b"other").hexdigest()).headers[
        "location"
    ]
    assert tus_patch(api, url, 0, data[:10]).status_code == 204
    resp = tus_patch(api, url, 10, data[10:])
    assert _error(resp, 460)["error"] == "checksum_mismatch"
    assert "fieldbox-asset-id" not in resp.headers
    assert api.get("/v1/assets").json()["items"] == []
    assert api.head(url, headers=TUS).status_code == 404  # discarded, bytes and session


def test_terminate_then_404(api: TestClient[Litestar]) -> None:
    """DELETE ends an upload (204); afterwards every verb on it is 404."""
    url = tus_create(api, 10).headers["location"]
    tus_patch(api, url, 0, b"abc")
    resp = api.delete(url, headers=TUS)
    assert resp.status_code == 204
    assert api.head(url, headers=TUS).status_code == 404
    _error(tus_patch(api, url, 3, b"def"), 404)
    _error(api.get(url), 404)
    _error(api.delete(url, headers=TUS), 404)


def test_terminating_finished_upload_keeps_asset(api: TestClient[Litestar]) -> None:
    """Terminating an upload that already became an asset frees the session, not the asset."""
    created = tus_create(api, 3)
    url = created.headers["location"]
    asset_id = tus_patch(api, url, 0, b"abc").headers["fieldbox-asset-id"]
    assert api.delete(url, headers=TUS).status_code == 204
    assert api.get(f"/v1/assets/{asset_id}/content").content == b"abc"


def test_unknown_or_unsafe_upload_id(api: TestClient[Litestar]) -> None:
    """An upload id that does not exist is 404; a malformed one is 400 naming the rule."""
    url = "/v1/uploads/" + "0" * 32
    assert api.head(url, headers=TUS).status_code == 404
    _error(tus_patch(api, url, 0, b"x"), 404)
    _error(api.get(url), 404)
    _error(api.delete(url, headers=TUS), 404)
    for bad in ("%2e%2e", "-x", "a.b"):
        assert _error(api.get(f"/v1/uploads/{bad}"), 400)["error"] == "invalid_name", bad
    # Slashes decode before routing: the path leaves /v1/uploads and matches no route.
    assert _error(api.get("/v1/uploads/..%2F..%2Fkeys"), 404)["error"] == "not_found"


def test_status_json(api: TestClient[Litestar]) -> None:
    """GET /v1/uploads/{id} is a JSON summary that names the asset once done."""
    url = tus_create(api, 6, filename="notes.txt").headers["location"]
    tus_patch(api, url, 0, b"abc")
    status = api.get(url).json()
    assert status["id"] == url.rsplit("/", 1)[1]
    assert (status["offset"], status["length"]) == (3, 6)
    assert (status["location"], status["filename"]) == ("loc1", "notes.txt")
    assert status["asset_id"] is None
    asset_id = tus_patch(api, url, 3, b"def").headers["fieldbox-asset-id"]
    assert api.get(url).json()["asset_id"] == asset_id


def test_patch_after_completion_is_refused(api: TestClient[Litestar]) -> None:
    """Once complete, more bytes are refused (413, as for any PATCH past the length)."""
    url = tus_create(api, 3).headers["location"]
    asset_id = tus_patch(api, url, 0, b"abc").headers["fieldbox-asset-id"]
    resp = tus_patch(api, url, 3, b"more")
    assert resp.status_code == 413
    assert api.get(f"/v1/assets/{asset_id}/content").content == b"abc"


def test_repeated_final_empty_patch_is_harmless(api: TestClient[Litestar]) -> None:
    """An empty PATCH at the end of a finished upload is a no-op that still names the asset."""
    url = tus_create(api, 3).headers["location"]
    asset_id = tus_patch(api, url, 0, b"abc").headers["fieldbox-asset-id"]
    resp = tus_patch(api, url, 3, b"")
    assert resp.status_code == 204
    assert resp.headers["upload-offset"] == "3"
    assert resp.headers["fieldbox-asset-id"] == asset_id
    assert len(api.get("/v1/assets").json()["items"]) == 1


def test_upload_needs_a_key(api: TestClient[Litestar]) -> None:
    """Creating, appending and reading uploads need a field key."""
    url = tus_create(api, 3).headers["location"]
    del api.headers["Authorization"]
    _error(tus_create(api, 3), 401)
    _error(tus_patch(api, url, 0, b"abc"), 401)
    assert api.head(url, headers=TUS).status_code == 401
