"""Helpers for the system tests: locations, tus calls, on-disk checks, worker processes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, Server, make_config, make_token

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"

# Short leases, heartbeats and polls, so the worker tests see lease expiry and retries fast.
FAST_WORKER_CONFIG = """
[queue]
lease_s = 2.0
backoff_s = [0.5]
[worker]
heartbeat_s = 0.3
poll_s = 0.1
[perception]
fps = 30.0
"""


def client(url: str, token: str, timeout: float = 30.0) -> httpx.Client:
    """An httpx client for a real server with the bearer token set."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def create_location(c: httpx.Client, loc_id: str, account: str = "acme", geo: str = "u4pr") -> None:
    """Create a location; fail the test unless the server acknowledged it."""
    r = c.post(
        "/v1/locations",
        json={"id": loc_id, "account": account, "geo_prefix": geo, "name": f"site {loc_id}"},
    )
    assert r.status_code == 201, r.text


def tus_metadata(location: str, filename: str) -> str:
    """An Upload-Metadata header value naming the location and file."""
    pairs = {"location": location, "filename": filename}
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def tus_create(c: httpx.Client, location: str, length: int, filename: str = "f.bin") -> str:
    """Start an upload; return its URL path."""
    r = c.post(
        "/v1/uploads",
        headers={
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": tus_metadata(location, filename),
        },
    )
    assert r.status_code == 201, r.text
    return str(r.headers["location"])


def tus_patch(c: httpx.Client, url: str, offset: int, data: bytes) -> httpx.Response:
    """One PATCH of `data` at `offset`."""
    return c.patch(
        url,
        content=data,
        headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS},
    )


def tus_offset(c: httpx.Client, url: str) -> int:
    """The offset the server says it holds (HEAD)."""
    r = c.head(url, headers=TUS)
    assert r.status_code == 200, (r.status_code, r.headers)
    return int(r.headers["upload-offset"])


def tus_finish(c: httpx.Client, url: str, data: bytes, chunk: int = 256 * 1024) -> str:
    """PATCH whatever the server lacks, from its HEAD offset; return the asset id."""
    offset = tus_offset(c, url)
    asset_id = c.head(url, headers=TUS).headers.get("fieldbox-asset-id")
    for _ in range(len(data) // chunk + 2):
        if asset_id is not None:
            break
        r = tus_patch(c, url, offset, data[offset : offset + chunk])
        assert r.status_code == 204, (r.status_code, r.text)
        offset = int(r.headers["upload-offset"])
        asset_id = r.headers.get("fieldbox-asset-id")
    assert asset_id is not None, f"upload {url} never became an asset"
    return str(asset_id)


def asset_bytes(c: httpx.Client, asset_id: str) -> bytes:
    """Download an asset's content."""
    r = c.get(f"/v1/assets/{asset_id}/content")
    assert r.status_code == 200, r.text
    return r.content


def sha256(data: bytes) -> str:
    """Hex sha256."""
    return hashlib.sha256(data).hexdigest()


def integrity_check(path: Path) -> str:
    """`PRAGMA integrity_check` of a SQLite file, opened read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


def all_databases(data_dir: Path) -> list[Path]:
    """Every SQLite file fieldbox keeps under a data root (listed locations, uploads, keys)."""
    dbs = sorted(data_dir.glob("locations/*/*/*/location.db"))
    dbs = [p for p in dbs if not p.parent.name.startswith(".")]
    return [*dbs, data_dir / "uploads.db", data_dir / "keys.db"]


def check_databases(data_dir: Path) -> None:
    """Assert `integrity_check` is ok on every database under the data root."""
    for db in all_databases(data_dir):
        assert db.is_file(), f"{db} is missing"
        assert integrity_check(db) == "ok", f"{db} is corrupt"


def check_blobs(data_dir: Path) -> int:
    """Assert no half-visible files: every asset's blob exists with its digest; return count."""
    seen = 0
    for db in all_databases(data_dir)[:-2]:
        account, geo, loc = db.parts[-4], db.parts[-3], db.parts[-2]
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT id, sha256, size FROM assets").fetchall()
        finally:
            conn.close()
        for asset_id, digest, size in rows:
            blob = data_dir / "blobs" / account / geo / loc / digest[:2] / digest
            assert blob.is_file(), f"asset {asset_id} has no blob {blob}"
            assert blob.stat().st_size == size, f"asset {asset_id}: blob size differs"
            seen += 1
    for blob in (data_dir / "blobs").glob("*/*/*/*/*"):
        if blob.is_file():
            assert sha256(blob.read_bytes()) == blob.name, f"blob {blob} does not match its name"
    return seen


def box_databases(data_dir: Path) -> list[Path]:
    """Every SQLite file of a whole box: each location.db, uploads, keys, queue and outbox."""
    names = ("uploads.db", "keys.db", "queue.db", "outbox.db")
    return [*all_databases(data_dir)[:-2], *(data_dir / n for n in names)]


def foreign_key_violations(path: Path) -> list[tuple[Any, ...]]:
    """`PRAGMA foreign_key_check` rows of a SQLite file (empty when every reference holds)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return [tuple(r) for r in conn.execute("PRAGMA foreign_key_check").fetchall()]
    finally:
        conn.close()


def outbox_assets(data_dir: Path) -> dict[str, str]:
    """Asset id → state of every outbox row."""
    conn = sqlite3.connect(f"file:{data_dir / 'outbox.db'}?mode=ro", uri=True, timeout=30)
    try:
        return {str(a): str(s) for a, s in conn.execute("SELECT asset_id, state FROM outbox")}
    finally:
        conn.close()


def location_assets(data_dir: Path) -> list[dict[str, Any]]:
    """Every asset row of every location DB on disk (id, location, sha256, size, metadata)."""
    found: list[dict[str, Any]] = []
    for db in all_databases(data_dir)[:-2]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT id, sha256, size, kind, metadata FROM assets").fetchall()
        finally:
            conn.close()
        for asset_id, digest, size, kind, meta in rows:
            found.append(
                {"id": asset_id, "location": db.parts[-2], "sha256": digest, "size": size,
                 "kind": kind, "metadata": json.loads(meta or "{}"), "db": db}
            )  # fmt: skip
    return found


def check_box(data_dir: Path) -> int:
    """Assert the whole box is sound: every database passes `integrity_check` with no
    foreign-key violation, every asset has its blob and its outbox row; the asset count."""
    for db in box_databases(data_dir):
        assert db.is_file(), f"{db} is missing"
        assert integrity_check(db) == "ok", f"{db} is corrupt"
        assert foreign_key_violations(db) == [], f"{db}: dangling references"
    count = check_blobs(data_dir)
    assets = location_assets(data_dir)
    # Read after the assets: each outbox row is committed before its asset row.
    owed = outbox_assets(data_dir)
    unowed = [a["id"] for a in assets if a["id"] not in owed]
    assert not unowed, f"assets with no outbox row (never sent to S3): {unowed[:5]}"
    return count


def write_config(path: Path, toml: str) -> Path:
    """Write a config TOML file and return its path."""
    path.write_text(toml)
    return path


class DaemonProc:
    """A `fieldbox serve worker` (or `serve bridge`) process, its log beside the data root."""

    def __init__(
        self,
        data_dir: Path,
        config: Path,
        process: str = "worker",
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = data_dir.parent / f"{process}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--config", str(config), "serve", process],
            env={**os.environ, "FIELDBOX_DATA": str(data_dir), **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return int(self.proc.returncode)


def wait_job(
    client: httpx.Client, job_id: str, until: set[str], timeout: float = 180
) -> dict[str, Any]:
    """Poll a job until its status is one of `until`; fail the test past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {until}")


WorkerProc = DaemonProc


def api_with_location(
    tmp_path: Path, start_server: Callable[..., Server], config_text: str
) -> Iterator[tuple[Server, httpx.Client, Path]]:
    """An api process on `config_text` with location site1, a client with a field key, and
    the config path (for a fixture to `yield from`)."""
    data = tmp_path / "data"
    config = tmp_path / "fieldbox.toml"
    config.write_text(config_text)
    server = start_server(config, data)
    with client(server.url, make_token(make_config(data))) as c:
        create_location(c, "site1")
        yield server, c, config
