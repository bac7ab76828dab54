"""The bridge as a real process beside a real api, against a real S3 API (moto's server):
uploads reach S3, the location DB replicates, a dropped file becomes an asset, telemetry
ships, `/health` shows it all; a closed sync window holds blobs back while DBs replicate."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bridge.s3server import Bucket, s3_env, s3_toml
from tests.conftest import Server, make_config, make_token
from tests.system.conftest import StartServer
from tests.system.helpers import DaemonProc, client, create_location, tus_create, tus_finish

pytest.importorskip("moto")

MIB = 1024 * 1024


def _config(tmp_path: Path, bucket: Bucket, extra: str = "") -> Path:
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    path = tmp_path / "fieldbox.toml"
    path.write_text(
        "[bridge]\n"
        + extra
        + s3_toml(bucket.endpoint, bucket.name)
        + "[bridge.upload]\npoll_s = 0.2\nretry_base_s = 0.5\n"
        + f"multipart_threshold_bytes = {5 * MIB}\npart_size_bytes = {5 * MIB}\n"
        + "[bridge.litestream]\nsync_interval_s = 0.5\n"
        + "[bridge.telemetry]\ninterval_s = 0.5\n"
        + f'[bridge.drop_folder]\npath = "{drop}"\nlocation = "site1"\nstable_s = 0.5\n'
    )
    return path


@pytest.fixture
def box(
    tmp_path: Path, start_server: StartServer, bucket: Bucket
) -> Iterator[Callable[[str], tuple[Server, httpx.Client, Path]]]:
    """Start an api with location `site1` on a config pointing at the test bucket."""
    clients: list[httpx.Client] = []

    def start(extra: str = "") -> tuple[Server, httpx.Client, Path]:
        config = _config(tmp_path, bucket, extra)
        data = tmp_path / "data"
        server = start_server(config, data)
        c = client(server.url, make_token(make_config(data)))
        clients.append(c)
        create_location(c, "site1")
        return server, c, config

    yield start
    for c in clients:
        c.close()


def _until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _upload(c: httpx.Client, data: bytes, name: str) -> str:
    return tus_finish(c, tus_create(c, "site1", len(data), name), data)


def _bridge_status(c: httpx.Client) -> dict[str, Any]:
    status: dict[str, Any] = c.get("/health").json().get("bridge") or {}
    return status


def _old_telemetry(data: Path) -> Path:
    # A spool file of an hour that is over, named the way store/telemetry.Spool names them.
    hour = datetime.now(UTC) - timedelta(hours=3)  # Spool names files by UTC hour
    folder = data / "telemetry" / hour.strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hour.strftime('%H')}-gateway-1.0.jsonl"
    path.write_text("".join(json.dumps({"n": i, "event": "test"}) + "\n" for i in range(50)))
    return path


def test_uploads_dbs_drops_and_telemetry_reach_s3(
    box: Callable[[str], tuple[Server, httpx.Client, Path]], bucket: Bucket, tmp_path: Path
) -> None:
    """Two uploads (one multipart) land as blobs with their bytes; the location DB has a
    replica; a dropped file becomes an asset and a blob; old telemetry ships and its spool
    file goes; `/health` shows the bridge with an empty backlog; SIGTERM stops it cleanly."""
    server, c, config = box("")
    small = os.urandom(200_000)
    large = os.urandom(6 * MIB + 123)
    _upload(c, small, "small.jpg")
    _upload(c, large, "large.mp4")
    spooled = _old_telemetry(server.data_dir)
    bridge = DaemonProc(server.data_dir, config, "bridge", env=s3_env())
    try:
        blobs = "fieldbox/acme/u4pr/site1/blobs/"
        for data in (small, large):
            key = blobs + hashlib.sha256(data).hexdigest()
            _until(f"blob {key}", lambda key=key: key in bucket.keys(blobs))  # type: ignore[misc]
            body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
            assert body == data
        assert bucket.multipart_uploads() == []
        _until("a DB replica", lambda: bucket.keys("fieldbox/acme/u4pr/site1/db/"))

        dropped = tmp_path / "drop" / "sd-card.jpg"
        payload = os.urandom(50_000)
        dropped.write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        _until("the dropped blob", lambda: blobs + digest in bucket.keys(blobs))
        assets = c.get("/v1/assets", params={"location": "site1"}).json()["items"]
        assert digest in {a["sha256"] for a in assets}
        assert (tmp_path / "drop" / "ingested" / "sd-card.jpg").exists()

        _until("telemetry", lambda: bucket.keys("fieldbox/telemetry/box1/"))
        _until("the spool file pruned", lambda: not spooled.exists())

        status = _until(
            "an empty backlog on /health",
            lambda: (s := _bridge_status(c)).get("outbox", {}).get("items") == 0 and s,
        )
        assert status["alive"] and status["remote"] == "ok"
    finally:
        code = bridge.stop()
    assert code == 0, bridge.log_path.read_text()[-3000:]


def test_a_closed_window_holds_blobs_while_databases_replicate(
    box: Callable[[str], tuple[Server, httpx.Client, Path]], bucket: Bucket
) -> None:
    """Outside the only sync window no blob goes up, yet the location DB still replicates
    and `/health` says uploads are held."""
    later = datetime.now().astimezone() + timedelta(hours=2)
    closes = later + timedelta(hours=1)
    window = f'[[bridge.windows]]\nstart = "{later:%H}:00"\nend = "{closes:%H}:00"\n'
    server, c, config = box(window)
    _upload(c, os.urandom(10_000), "held.jpg")
    bridge = DaemonProc(server.data_dir, config, "bridge", env=s3_env())
    try:
        _until("a DB replica", lambda: bucket.keys("fieldbox/acme/u4pr/site1/db/"))
        # The uploader looked several times, found the window closed and sent nothing.
        status = _until(
            "three polls held by the window",
            lambda: (s := _bridge_status(c)).get("uploader", {}).get("window_waits", 0) >= 3 and s,
        )
        assert bucket.keys("fieldbox/acme/u4pr/site1/blobs/") == []
        assert status["uploader"]["uploaded"] == 0
        assert status["uploads_allowed"] is False
        assert status["outbox"]["items"] == 1
    finally:
        assert bridge.stop() == 0, bridge.log_path.read_text()[-3000:]
