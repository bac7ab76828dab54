"""A full data disk answers 507 with a clear message, never 500, and corrupts nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, make_config, make_token
from tests.system.conftest import StartServer
from tests.system.helpers import (
    TUS,
    asset_bytes,
    check_blobs,
    check_databases,
    client,
    create_location,
    tus_create,
    tus_finish,
    tus_metadata,
    tus_offset,
    tus_patch,
    write_config,
)

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for this test only (skips when mounting is not permitted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def _check_507(r: httpx.Response) -> None:
    """A 507 carries the JSON error body with a message a person understands."""
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["status"] == 507
    assert body["error"] == "insufficient_storage"
    message = body["message"].lower()
    assert "space" in message or "disk" in message, message


def _start_on(
    disk: Path, tmp_path: Path, start_server: StartServer, toml: str = ""
) -> tuple[Server, str]:
    """A real server whose data root is the whole tiny disk (its log stays off it)."""
    token = make_token(make_config(disk))
    config = write_config(tmp_path / "fieldbox.toml", "[store]\nmin_free_disk_mb = 0\n" + toml)
    return start_server(config_path=config, data_dir=disk), token


def _fill(disk: Path, leave: int) -> Path:
    """Write a filler file outside the API until about `leave` bytes are free; return it."""
    filler = disk / ".filler"
    with open(filler, "wb") as fh:
        for block in (1 << 20, 64 * KIB, 4 * KIB):
            for _ in range(10_000):
                if shutil.disk_usage(disk).free - block < leave:
                    break
                try:
                    fh.write(b"\0" * block)
                    fh.flush()
                except OSError:
                    fh.seek(0, os.SEEK_END)
                    break
        os.fsync(fh.fileno())
    return filler


def test_full_disk_gets_507_and_loses_nothing(
    tiny_disk: Path, tmp_path: Path, start_server: StartServer
) -> None:
    """Fill a real filesystem through the API: 507s only, then everything still works."""
    srv, token = _start_on(tiny_disk, tmp_path, start_server)
    data_dir = tiny_disk
    acked: dict[str, tuple[bytes, str]] = {}
    statuses: list[tuple[str, int, str]] = []
    with client(srv.url, token) as c:
        create_location(c, "site")
        for i in range(10):
            body = json.dumps({"i": i, "pad": "x" * 1000}).encode()
            r = c.put(
                f"/v1/locations/site/docs/c/before{i}", content=body, headers={"If-None-Match": "*"}
            )
            assert r.status_code == 201, r.text
            acked[f"before{i}"] = (body, r.headers["etag"])
        early = os.urandom(100 * KIB)
        early_asset = tus_finish(c, tus_create(c, "site", len(early), "early.bin"), early)

        # Leave about 1 MiB free, outside the API.
        filler = _fill(tiny_disk, MIB)

        uploads: list[tuple[str, bytes, int]] = []  # url, data, acknowledged offset
        seen_507: set[str] = set()
        for i in range(60):
            if {"doc", "upload"} <= seen_507:
                break
            body = json.dumps({"i": i, "pad": os.urandom(150 * KIB).hex()[: 300 * KIB]}).encode()
            r = c.put(
                f"/v1/locations/site/docs/c/fill{i}", content=body, headers={"If-None-Match": "*"}
            )
            statuses.append((f"PUT fill{i}", r.status_code, r.text[:200]))
            if r.status_code == 201:
                acked[f"fill{i}"] = (body, r.headers["etag"])
            elif r.status_code == 507:
                _check_507(r)
                seen_507.add("doc")

            data = os.urandom(300 * KIB)
            r = c.post(
                "/v1/uploads",
                headers={
                    **TUS,
                    "Upload-Length": str(len(data)),
                    "Upload-Metadata": tus_metadata("site", f"fill{i}.bin"),
                },
            )
            statuses.append((f"POST upload {i}", r.status_code, r.text[:200]))
            if r.status_code == 507:
                _check_507(r)
                seen_507.add("upload")
                continue
            if r.status_code != 201:
                continue
            url = str(r.headers["location"])
            offset = 0
            for _ in range(10):
                p = tus_patch(c, url, offset, data[offset : offset + 64 * KIB])
                statuses.append((f"PATCH {url}@{offset}", p.status_code, p.text[:200]))
                if p.status_code != 204:
                    if p.status_code == 507:
                        _check_507(p)
                        seen_507.add("upload")
                    break
                offset = int(p.headers["upload-offset"])
                if offset == len(data):
                    break
            uploads.append((url, data, offset))

        # While full: an update and a new location are refused cleanly (or fit), never half-done.
        body = json.dumps({"updated": True, "pad": "y" * 200 * KIB}).encode()
        r = c.put(
            "/v1/locations/site/docs/c/before0",
            content=body,
            headers={"If-Match": acked["before0"][1]},
        )
        statuses.append(("PUT before0 (update)", r.status_code, r.text[:200]))
        if r.status_code == 200:
            acked["before0"] = (body, r.headers["etag"])
        elif r.status_code == 507:
            _check_507(r)
        r = c.post(
            "/v1/locations",
            json={"id": "late", "account": "acme", "geo_prefix": "u4pr", "name": "late"},
        )
        statuses.append(("POST location late", r.status_code, r.text[:200]))
        if r.status_code == 507:
            _check_507(r)

        errors = [s for s in statuses if s[1] >= 500 and s[1] != 507]
        assert not errors, f"server errors while the disk filled: {errors}"
        assert {"doc", "upload"} <= seen_507, f"no 507 seen for {seen_507 ^ {'doc', 'upload'}}"
        unexpected = [s for s in statuses if s[1] not in (200, 201, 204, 507)]
        assert not unexpected, unexpected

        filler.unlink()
        r = c.put(
            "/v1/locations/site/docs/c/after",
            content=b'{"ok": true}',
            headers={"If-None-Match": "*"},
        )
        assert r.status_code == 201, r.text
        assert c.get("/ready").status_code == 200
        listed = [loc["id"] for loc in c.get("/v1/locations").json()["items"]]
        assert set(listed) <= {"site", "late"}, listed
        if "late" not in listed:
            create_location(c, "late")
        for key, (body, etag) in acked.items():
            got = c.get(f"/v1/locations/site/docs/c/{key}")
            assert got.status_code == 200, f"acknowledged {key} is gone"
            assert got.content == body, f"acknowledged {key} changed"
            assert got.headers["etag"] == etag
        assert asset_bytes(c, early_asset) == early
        for url, data, offset in uploads:
            assert tus_offset(c, url) >= offset
            assert asset_bytes(c, tus_finish(c, url, data)) == data
        fresh = os.urandom(200 * KIB)
        assert asset_bytes(c, tus_finish(c, tus_create(c, "site", len(fresh)), fresh)) == fresh
    srv.stop()
    check_databases(data_dir)
    check_blobs(data_dir)


def test_low_disk_guard(start_server: StartServer, token: str, tmp_path: Path) -> None:
    """Below `min_free_disk_mb`, new uploads get 507 and /ready says 503."""
    config = write_config(tmp_path / "fieldbox.toml", "[store]\nmin_free_disk_mb = 100000000\n")
    srv = start_server(config_path=config)
    with client(srv.url, token) as c:
        create_location(c, "site")
        r = c.post(
            "/v1/uploads",
            headers={
                **TUS,
                "Upload-Length": "10",
                "Upload-Metadata": tus_metadata("site", "a.bin"),
            },
        )
        assert r.status_code == 507, r.text
        _check_507(r)
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["disk"] != "ok"
        assert c.get("/health").status_code == 200


def test_small_patch_on_full_disk_gets_507(
    tiny_disk: Path, tmp_path: Path, start_server: StartServer
) -> None:
    """Small tus chunks on a disk with no space left get 507, keep nothing, and resume later."""
    srv, token = _start_on(tiny_disk, tmp_path, start_server)
    data = os.urandom(64 * KIB)
    with client(srv.url, token) as c:
        create_location(c, "site")
        url = tus_create(c, "site", len(data), "small.bin")
        filler = _fill(tiny_disk, 0)
        answers: list[tuple[int, int, str]] = []
        for size in (1000, 5000, 7000):
            r = tus_patch(c, url, 0, data[:size])
            answers.append((size, r.status_code, r.text[:200]))
        # The disk has no byte free: every chunk, however small, is a 507 and keeps nothing.
        assert [status for _, status, _ in answers] == [507, 507, 507], answers
        for _, _, text in answers:
            assert "space" in text or "disk" in text
        assert tus_offset(c, url) == 0
        filler.unlink()
        assert asset_bytes(c, tus_finish(c, url, data)) == data
    srv.stop()
    check_databases(tiny_disk)


def test_wal_checkpoint_on_full_disk(
    tiny_disk: Path, tmp_path: Path, start_server: StartServer
) -> None:
    """With a small `wal_max_bytes`, writes on a filling disk answer 201 or 507, never 500."""
    srv, token = _start_on(tiny_disk, tmp_path, start_server, "wal_max_bytes = 1048576\n")
    answers: dict[str, tuple[int, bytes]] = {}
    with client(srv.url, token) as c:
        create_location(c, "site")
        filler = _fill(tiny_disk, 1536 * KIB)
        for i in range(40):
            body = json.dumps({"i": i, "pad": os.urandom(100 * KIB).hex()}).encode()
            r = c.put(
                f"/v1/locations/site/docs/c/k{i}", content=body, headers={"If-None-Match": "*"}
            )
            answers[f"k{i}"] = (r.status_code, body)
            if r.status_code == 507:
                _check_507(r)
                break
        assert [s for s, _ in answers.values()][-1] == 507, "the disk never filled"
        bad = {k: s for k, (s, _) in answers.items() if s not in (201, 507)}
        assert not bad, f"writes answered neither 201 nor 507: {bad}"
        for key, (status, body) in answers.items():
            got = c.get(f"/v1/locations/site/docs/c/{key}")
            if status == 201:
                assert got.status_code == 200 and got.content == body, key
            else:
                assert got.status_code == 404, f"{key} answered 507 but was written"
    srv.stop()
    # SQLite cannot even open a WAL database read-only on a disk with no room for its
    # shared-memory file; an operator frees space first, and so does this check.
    filler.unlink()
    check_databases(tiny_disk)
