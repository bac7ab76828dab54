"""Running an ASGI app under uvicorn, telling the app the moment a shutdown begins."""

from __future__ import annotations

import threading
from types import FrameType
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn's server, plus an event set as soon as SIGTERM/SIGINT arrives."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Flag the app first, so long requests wind down inside the graceful window."""
        self._stopping.set()
        super().handle_exit(sig, frame)


def serve(
    app: Any, *, host: str, port: int, stopping: threading.Event, loop: str = "asyncio"
) -> None:
    """Serve `app` until a signal; in-flight requests get 10 s to finish."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # The box is reached directly on the LAN, not through a proxy: trust no X-Forwarded-*.
        proxy_headers=False,
        server_header=False,
        # Measured: the api's stdlib loop gave more CAS writes/s than uvloop (bench_api.py),
        # as it releases the GIL around socket calls and the commit thread gets in; the
        # gateway, all sockets and no SQLite writes, is faster on uvloop.
        loop=loop,
    )
    _Server(config, stopping).run()
