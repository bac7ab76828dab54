"""Expiry counts from the last byte received: a moving upload outlives its creation's ttl."""

from __future__ import annotations

import os
import sqlite3
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

from tests.system.conftest import StartServer
from tests.system.helpers import (
    TUS,
    asset_bytes,
    client,
    create_location,
    tus_create,
    tus_patch,
    write_config,
)

TTL_S = 3.0
CHUNK = 1024


def _row(data_dir: Path, upload_id: str) -> tuple[float, float] | None:
    """(created_at, expires_at) of an upload session, or None once it is swept."""
    conn = sqlite3.connect(f"file:{data_dir / 'uploads.db'}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute(
            "SELECT created_at, expires_at FROM uploads WHERE id = ?", (upload_id,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else (float(row[0]), float(row[1]))


def test_upload_moving_past_its_ttl_is_not_swept(
    start_server: StartServer, token: str, tmp_path: Path
) -> None:
    """A slow client PATCHes every ttl/12 s; an idle upload created later is swept first."""
    config = write_config(
        tmp_path / "fieldbox.toml",
        f"[api]\nupload_expiry_hours = {TTL_S / 3600!r}\ncleanup_interval_s = 0.2\n",
    )
    srv = start_server(config_path=config)
    data = os.urandom(200 * CHUNK)
    with client(srv.url, token) as c:
        create_location(c, "site")
        url = tus_create(c, "site", len(data), "slow.bin")
        upload_id = url.rsplit("/", 1)[1]
        created = _row(srv.data_dir, upload_id)
        assert created is not None
        assert abs((created[1] - created[0]) - TTL_S) < 1e-6
        first_expires = parsedate_to_datetime(c.head(url, headers=TUS).headers["upload-expires"])
        # Created after the slow one, so once the sweeper took it, the slow one's
        # creation-time expiry has passed too, and a sweep ran after it.
        idle = tus_create(c, "site", 10, "idle.bin").rsplit("/", 1)[1]
        offset = 0
        deadline = time.monotonic() + 60
        while _row(srv.data_dir, idle) is not None:
            assert time.monotonic() < deadline, "the sweeper never removed the idle upload"
            r = tus_patch(c, url, offset, data[offset : offset + CHUNK])
            assert r.status_code == 204, (offset, r.status_code, r.text)
            offset += CHUNK
            assert r.headers["upload-offset"] == str(offset)
            time.sleep(TTL_S / 12)  # the slow link's pace, not a wait for an outcome
        assert offset < len(data), "the upload finished before the idle one was swept"
        moved = _row(srv.data_dir, upload_id)
        assert moved is not None, "the moving upload was swept"
        assert moved[0] == created[0]
        assert moved[1] > created[1], "the expiry did not move with the bytes"
        head = c.head(url, headers=TUS)
        assert head.status_code == 200, head.status_code
        assert head.headers["upload-offset"] == str(offset)
        expires = parsedate_to_datetime(head.headers["upload-expires"])
        assert expires > first_expires
        assert int(expires.timestamp()) == int(moved[1])  # the header is the row's expiry
        r = tus_patch(c, url, offset, data[offset:])
        assert r.status_code == 204, r.text
        assert asset_bytes(c, r.headers["fieldbox-asset-id"]) == data
