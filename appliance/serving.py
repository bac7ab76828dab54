"""Running an ASGI app under uvicorn, telling the app the moment a shutdown begins.

Under systemd (`Type=notify`) the server also says READY=1 once the app's lifespan has
started and the socket listens, pings the watchdog from its own event loop, and says
STOPPING=1 when the graceful stop begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from appliance import sdnotify
from appliance.httplimits import ErrorBody, bounded_protocol


class _Server(uvicorn.Server):
    """uvicorn's server, plus an event set as soon as SIGTERM/SIGINT arrives."""

    def __init__(self, config: uvicorn.Config, stopping: threading.Event) -> None:
        super().__init__(config)
        self._stopping = stopping
        self._watchdog: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Flag the app first, so long requests wind down inside the graceful window."""
        self._stopping.set()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Route SIGTERM/SIGINT to a graceful stop, and end with exit status 0 after it.

        uvicorn re-raises the signal once it has stopped, so the process dies "killed by
        SIGTERM"; a clean stop should read as a clean exit to systemd, `fieldbox up` and
        an operator alike.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does; once listening, tell systemd and start the watchdog."""
        await super().startup(sockets)
        if self.started and not self.should_exit:
            sdnotify.ready(f"listening on {self.config.host}:{self.config.port}")
            self._watchdog = asyncio.create_task(sdnotify.watchdog_loop(), name="sd-watchdog")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Say STOPPING=1, then stop as uvicorn does (pinging on until the app is closed)."""
        sdnotify.stopping("draining requests")
        try:
            await super().shutdown(sockets)
        finally:
            await sdnotify.stop_task(self._watchdog)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    stopping: threading.Event,
    error_body: ErrorBody,
    loop: str = "asyncio",
) -> None:
    """Serve `app` until a signal; in-flight requests get 10 s to finish.

    A request head past the limits of `appliance.httplimits` is refused with 414/431 and
    an `error_body` JSON body before the app sees it.
    """
    config = uvicorn.Config(
        app,
        http=bounded_protocol(error_body),
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
