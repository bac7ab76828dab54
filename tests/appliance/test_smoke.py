"""The api answers its probes."""

from __future__ import annotations

from typing import Any


def test_health_and_version(client: Any) -> None:
    """/health and /version answer without a key."""
    client.headers.pop("Authorization")
    assert client.get("/health").json()["ok"] is True
    assert client.get("/version").json()["name"] == "fieldbox"
