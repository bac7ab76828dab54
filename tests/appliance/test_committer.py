"""Document writes wait out another writer's lock without blocking the api, or answer 503."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from appliance.app import create_app
from tests.conftest import make_config, make_token


def _location_db(data_dir: Path) -> Path:
    return next(data_dir.glob("locations/*/*/loc1/location.db"))


def _queued(app: Any) -> int:
    """Writes waiting in the api's group committers for their batch's BEGIN IMMEDIATE."""
    return sum(len(c._pending) for c in app.state.svc.committers.values())


def _until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def _client(data_dir: Path, toml: str = "") -> tuple[Any, str]:
    cfg = make_config(data_dir, toml)
    return create_app(cfg), make_token(cfg)


def test_write_waits_for_another_writers_lock_and_health_stays_up(tmp_path: Path) -> None:
    """While another connection holds the write lock, a PUT waits; /health still answers."""
    app, token = _client(tmp_path / "data")
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        client.post(
            "/v1/locations", json={"id": "loc1", "account": "a", "geo_prefix": "g", "name": "n"}
        )
        other = sqlite3.connect(_location_db(tmp_path / "data"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        result: dict[str, Any] = {}

        def put() -> None:
            result["resp"] = client.put(
                "/v1/locations/loc1/docs/c/k", content=b'{"a": 1}', headers={"If-None-Match": "*"}
            )

        writer = threading.Thread(target=put)
        writer.start()
        # The write has reached the database and is queued behind the other writer's lock
        # (the committer retries BEGIN IMMEDIATE until the lock goes or the busy timeout).
        _until("the write queued or answered", lambda: _queued(app) == 1 or "resp" in result)
        assert client.get("/health").status_code == 200  # the event loop is not blocked
        assert _queued(app) == 1 and "resp" not in result, "the write did not wait for the lock"
        other.execute("ROLLBACK")
        other.close()
        writer.join(10)
        assert result["resp"].status_code == 201
        assert client.get("/v1/locations/loc1/docs/c/k").content == b'{"a": 1}'


def test_write_gets_503_when_the_lock_outlives_the_busy_timeout(tmp_path: Path) -> None:
    """A lock held past `busy_timeout_ms` gives 503 with Retry-After, and nothing is written."""
    app, token = _client(tmp_path / "data", "[store]\nbusy_timeout_ms = 5000\n")
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        client.post(
            "/v1/locations", json={"id": "loc1", "account": "a", "geo_prefix": "g", "name": "n"}
        )
        other = sqlite3.connect(_location_db(tmp_path / "data"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            resp = client.put(
                "/v1/locations/loc1/docs/c/k", content=b'{"a": 1}', headers={"If-None-Match": "*"}
            )
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "1"
        assert resp.json()["error"] == "busy"
        assert client.get("/v1/locations/loc1/docs/c/k").status_code == 404
