"""The stock tuspy client (`tusclient`) against a real `fieldbox serve api` process."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError
from tusclient.storage.filestorage import FileStorage

from appliance.config import FieldboxConfig
from tests.conftest import Server, make_config, make_token


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _make_location(url: str, token: str) -> None:
    resp = httpx.post(
        f"{url}/v1/locations",
        json={"id": "loc1", "account": "acme", "geo_prefix": "u4pr", "name": "Site"},
        headers=_auth(token),
    )
    assert resp.status_code == 201, resp.text


def _asset_of(url: str, upload_url: str, token: str) -> str:
    head = httpx.head(upload_url, headers={**_auth(token), "Tus-Resumable": "1.0.0"})
    assert head.status_code == 200
    assert head.headers["upload-offset"] == head.headers["upload-length"]
    asset_id = head.headers.get("fieldbox-asset-id")
    assert isinstance(asset_id, str) and asset_id, dict(head.headers)
    return asset_id


def _download(url: str, asset_id: str, token: str) -> bytes:
    resp = httpx.get(f"{url}/v1/assets/{asset_id}/content", headers=_auth(token))
    assert resp.status_code == 200
    return resp.content


@pytest.fixture
def live(server: Server, token: str) -> Server:
    """The real api process, with location `loc1`."""
    _make_location(server.url, token)
    return server


def _url_of(uploader: Any) -> str:
    """The upload URL a tuspy uploader is working on."""
    url = uploader.url
    assert isinstance(url, str) and url
    return url


def _client(srv: Server, token: str) -> TusClient:
    return TusClient(f"{srv.url}/v1/uploads", headers=_auth(token))


def test_full_upload(live: Server, token: str) -> None:
    """One-shot upload of a file; the asset downloads byte for byte."""
    data = os.urandom(300_000)
    uploader = _client(live, token).uploader(
        file_stream=io.BytesIO(data), metadata={"location": "loc1", "filename": "full.bin"}
    )
    uploader.upload()
    asset_id = _asset_of(live.url, _url_of(uploader), token)
    assert _download(live.url, asset_id, token) == data
    record = httpx.get(f"{live.url}/v1/assets/{asset_id}", headers=_auth(token)).json()
    assert record["filename"] == "full.bin"
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_chunked_upload_with_checksums(live: Server, token: str, tmp_path: Path) -> None:
    """Upload from a file path in small chunks, each carrying a sha1 Upload-Checksum."""
    data = os.urandom(200_000 + 123)
    path = tmp_path / "chunked.bin"
    path.write_bytes(data)
    uploader = _client(live, token).uploader(
        file_path=str(path),
        chunk_size=32 * 1024,
        upload_checksum=True,
        metadata={"location": "loc1", "filename": "chunked.bin", "project": "p1"},
    )
    uploader.upload()
    assert uploader.offset == len(data)
    asset_id = _asset_of(live.url, _url_of(uploader), token)
    assert _download(live.url, asset_id, token) == data


def test_declared_sha256_is_checked(live: Server, token: str) -> None:
    """A whole-file sha256 in the metadata is accepted when right and refused when wrong."""
    data = os.urandom(50_000)
    good = _client(live, token).uploader(
        file_stream=io.BytesIO(data),
        chunk_size=20_000,
        metadata={
            "location": "loc1",
            "filename": "good.bin",
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    good.upload()
    assert _download(live.url, _asset_of(live.url, _url_of(good), token), token) == data

    bad = _client(live, token).uploader(
        file_stream=io.BytesIO(data[::-1]),
        chunk_size=20_000,
        metadata={
            "location": "loc1",
            "filename": "bad.bin",
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    with pytest.raises(TusCommunicationError) as info:
        bad.upload()
    assert info.value.status_code == 460  # tus: the checksum did not match
    listed = httpx.get(f"{live.url}/v1/assets", headers=_auth(token)).json()["items"]
    assert [item["filename"] for item in listed] == ["good.bin"]


def test_stopped_upload_resumes_with_a_fresh_uploader(live: Server, token: str) -> None:
    """An upload stopped part-way is picked up by a new uploader of the same client at its URL."""
    data = os.urandom(100_000)
    client = _client(live, token)
    meta = {"location": "loc1", "filename": "resumed.bin"}
    first = client.uploader(file_stream=io.BytesIO(data), chunk_size=16_384, metadata=meta)
    first.upload(stop_at=40_000)
    assert 40_000 <= first.offset < len(data)

    second = client.uploader(file_stream=io.BytesIO(data), url=_url_of(first), chunk_size=16_384)
    assert second.offset == first.offset  # learnt from the server with HEAD
    second.upload()
    assert _download(live.url, _asset_of(live.url, _url_of(second), token), token) == data


def _raw_patch(
    token: str, upload_url: str, offset: int, declared: int, body: bytes
) -> socket.socket:
    """Start a PATCH announcing `declared` bytes but send only `body`; return the open socket."""
    parts = urlsplit(upload_url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30)
    head = (
        f"PATCH {parts.path} HTTP/1.1\r\n"
        f"Host: {parts.hostname}:{parts.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Tus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {declared}\r\n"
        "\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


@pytest.fixture
def stall_server(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """A real api process that ends a PATCH after 0.5 s without bytes, with `loc1`, and a token."""
    conf = tmp_path / "stall.toml"
    conf.write_text("[api]\nupload_stall_timeout_s = 0.5\n")
    data_dir = tmp_path / "stall-data"
    cfg: FieldboxConfig = make_config(data_dir, conf.read_text())
    token = make_token(cfg)
    srv = Server(data_dir, conf).start()
    try:
        _make_location(srv.url, token)
        yield srv, token
    finally:
        srv.stop()


def _read_response(sock: socket.socket) -> dict[str, Any]:
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    headers: dict[str, str] = {}
    for line in rest.split(b"\r\n\r\n")[0].split(b"\r\n"):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return {"status": int(status_line.split()[1]), "headers": headers}


def test_interrupted_upload_resumes_with_same_client(
    stall_server: tuple[Server, str], tmp_path: Path
) -> None:
    """A PATCH whose sender goes quiet keeps what arrived; the same tuspy client resumes from it."""
    srv, token = stall_server
    data = os.urandom(120_000)
    path = tmp_path / "video.bin"
    path.write_bytes(data)
    storage = FileStorage(str(tmp_path / "tus-urls.json"))  # type: ignore[no-untyped-call]
    client = _client(srv, token)
    meta = {"location": "loc1", "filename": "video.bin"}
    first = client.uploader(file_path=str(path), metadata=meta, store_url=True, url_storage=storage)
    first.set_url(first.create_url())

    sent = 70_000
    sock = _raw_patch(token, _url_of(first), 0, len(data), data[:sent])
    try:
        answer = _read_response(sock)
    finally:
        sock.close()
    assert answer["status"] == 204
    assert answer["headers"]["upload-offset"] == str(sent)

    again = client.uploader(
        file_path=str(path), metadata=meta, store_url=True, url_storage=storage, chunk_size=20_000
    )
    assert _url_of(again) == _url_of(first)
    assert again.offset == sent
    again.upload()
    assert _download(srv.url, _asset_of(srv.url, _url_of(again), token), token) == data


def _logged(srv: Server, method: str, path: str) -> bool:
    """True once the server's log has a finished-request line for `method path`."""
    for line in srv.log_path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(event, dict)
            and event.get("event") == "request"
            and (event.get("method"), event.get("path")) == (method, path)
        ):
            return True
    return False


def test_dropped_connection_then_resume(live: Server, token: str) -> None:
    """A PATCH cut off by a dropped connection never corrupts the file; the client resumes."""
    data = os.urandom(150_000)
    client = _client(live, token)
    first = client.uploader(
        file_stream=io.BytesIO(data), metadata={"location": "loc1", "filename": "drop.bin"}
    )
    first.set_url(first.create_url())
    sock = _raw_patch(token, _url_of(first), 0, len(data), data[:60_000])
    sock.close()

    # The server logs one line per request once it is done with it: wait for the cut-off one.
    path = urlsplit(_url_of(first)).path
    deadline = time.monotonic() + 20
    while not _logged(live, "PATCH", path):
        assert time.monotonic() < deadline, "the cut-off PATCH was never logged as finished"
        time.sleep(0.05)
    hdrs = {**_auth(token), "Tus-Resumable": "1.0.0"}
    offset = int(httpx.head(_url_of(first), headers=hdrs).headers["upload-offset"])
    assert 0 <= offset <= 60_000

    again = client.uploader(file_stream=io.BytesIO(data), url=_url_of(first), chunk_size=50_000)
    assert again.offset == offset
    again.upload()
    assert _download(live.url, _asset_of(live.url, _url_of(again), token), token) == data


def test_empty_file(live: Server, token: str) -> None:
    """tuspy uploads an empty file with only the POST; it becomes an empty asset."""
    uploader = _client(live, token).uploader(
        file_stream=io.BytesIO(b""), metadata={"location": "loc1", "filename": "empty.txt"}
    )
    uploader.upload()
    assert _download(live.url, _asset_of(live.url, _url_of(uploader), token), token) == b""
