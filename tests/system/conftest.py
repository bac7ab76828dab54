"""Fixtures of the system tests: real servers that are always stopped, config files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.config import FieldboxConfig
from tests.conftest import Server

StartServer = Callable[..., Server]


@pytest.fixture
def start_server(cfg: FieldboxConfig) -> Iterator[StartServer]:
    """Start real api processes (on the fixture's data root unless told); stop all at the end."""
    started: list[Server] = []

    def start(config_path: Path | None = None, data_dir: Path | None = None) -> Server:
        srv = Server(data_dir or cfg.data_dir, config_path)
        started.append(srv)
        return srv.start()

    yield start
    for srv in reversed(started):
        srv.stop()
