"""A bare pass-through proxy: the floor any gateway on fieldbox's stack can reach here.

    python bench/gateway_bare.py HOST PORT UPSTREAM_BASE_URL

A raw ASGI app on the same uvicorn settings as `fieldbox serve gateway`
(`appliance.serving.serve`), forwarding `POST /v1/chat/completions` through one pooled
aiohttp session configured like fieldbox's HTTP backends: the body is passed on as bytes,
a whole answer as the upstream's bytes, a stream as its bytes arrive. No framework,
no key check, no JSON parsing, no routing, no metrics, no logs. The bench shows it as a
reference column: fieldbox minus bare is what fieldbox's own work costs.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class BareProxy:
    """The ASGI app."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Lifespan opens and closes the pool; HTTP requests are forwarded."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope["path"]
        if path == "/health":
            await _answer(send, 200, _JSON, b'{"status":"ok"}')
            return
        if scope["method"] != "POST" or path != "/v1/chat/completions":
            await _answer(send, 404, _JSON, b'{"error":"not found"}')
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        assert self.session is not None
        async with self.session.post(
            self.upstream + "/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            if b'"stream":true' not in body:
                await _answer(send, resp.status, _JSON, await resp.read())
                return
            await send({"type": "http.response.start", "status": resp.status, "headers": _SSE})
            async for data in resp.content.iter_any():  # as the upstream's writes arrive
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                    timeout=aiohttp.ClientTimeout(total=300, sock_connect=5),
                    skip_auto_headers=("User-Agent",),
                    cookie_jar=aiohttp.DummyCookieJar(),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str]) -> int:
    """Serve until SIGTERM."""
    from appliance.serving import serve
    from inference.errors import error_body

    host, port, upstream = argv[0], int(argv[1]), argv[2]
    serve(
        BareProxy(upstream), host=host, port=port, stopping=threading.Event(), error_body=error_body
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
