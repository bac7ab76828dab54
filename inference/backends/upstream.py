"""A lean keep-alive HTTP/1.1 client for one upstream origin.

The gateway spends most of its CPU per proxied request in its HTTP client (issue 15:
aiohttp's request assembly, header multidicts and timeout tasks cost about half of it).
Every call here goes to one origin with the same few headers, so the request head is
built once, responses are parsed by `httptools` (llhttp, as uvicorn does), timeouts are
one timer handle, and idle connections wait in a LIFO pool.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

# An answer bigger than this is not a chat completion; refuse it rather than hold it.
MAX_BODY = 64 * 1024 * 1024
# Above this many unread streamed bytes the socket stops being read (backpressure).
_HIGH_WATER = 1024 * 1024
_IDLE_S = 30.0


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before its answer was whole."""


class UpstreamProtocolError(ConnectionError):
    """The upstream's answer is not HTTP this client can read, or too big."""


class _Conn(asyncio.Protocol):
    """One connection; it carries one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.framed = False  # Content-Length or chunked: the end is in the bytes, not EOF
        self.body = bytearray()
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.wake_on_body = False
        self.paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; bytes on an idle connection end it."""
        if self.complete:  # nothing was asked: an idle connection has nothing to say
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"bad HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        """A response that ends at EOF is whole; any other unfinished one failed."""
        self.closed = True
        if self.complete or self.error is not None:
            return
        if self.headers_done and not self.framed:
            self.complete = True
            self._wake()
        else:
            self._fail(UpstreamClosed(str(exc) if exc else "closed by the upstream"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one header."""
        lname = name.lower()
        if lname == b"content-length" or lname == b"transfer-encoding":
            self.framed = True
        self.headers.append((lname, value))

    def on_headers_complete(self) -> None:
        """The status line and headers are in."""
        self.status = self.parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        """Buffer a piece of the body."""
        self.body += body
        if len(self.body) > MAX_BODY:
            self._fail(UpstreamProtocolError(f"answer over {MAX_BODY} bytes"))
            return
        if self.wake_on_body:
            if len(self.body) > _HIGH_WATER and self.transport is not None and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        """The answer is whole."""
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # the exchange

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.abort()
        self._wake()

    def on_timeout(self) -> None:
        """The call's deadline passed."""
        self._fail(TimeoutError("upstream timed out"))

    def on_stall(self) -> None:
        """The stream sent nothing for its idle timeout."""
        self._fail(TimeoutError("upstream stalled"))

    def abort(self) -> None:
        """Drop the connection now."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes) -> None:
        """Start an exchange."""
        assert self.transport is not None
        if self.reused:
            self._reset()
        self.transport.write(data)

    async def wait(self) -> None:
        """Until the next event (headers, body bytes when asked for, end, error)."""
        if self.error is not None:
            raise self.error
        waiter = self.loop.create_future()
        self.waiter = waiter
        try:
            await waiter
        finally:
            self.waiter = None
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        """The buffered body so far, and resume reading if it was paused."""
        data = bytes(self.body)
        self.body.clear()
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data


class Response:
    """An upstream answer whose head is in; read its body or lines, then `release`."""

    def __init__(self, upstream: Upstream, conn: _Conn, timer: asyncio.TimerHandle) -> None:
        self._upstream = upstream
        self._conn = conn
        self._timer = timer
        self._rest = b""
        self.status = conn.status

    def header(self, name: bytes) -> bytes | None:
        """The first value of a (lowercase) header."""
        for key, value in self._conn.headers:
            if key == name:
                return value
        return None

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        conn.wake_on_body = False
        while not conn.complete:
            await conn.wait()
        return self._rest + conn.take()

    async def lines(self, idle_timeout: float) -> list[bytes]:
        """The complete non-empty lines in so far, stripped (at least one); [] at the end.
        Waits at most `idle_timeout` for each piece of the body.

        All the lines that are in come back together: an upstream that sends several events
        in one packet costs one call here, not one per line.
        """
        conn = self._conn
        conn.wake_on_body = True
        while True:
            if conn.body:
                self._rest += conn.take()
            end = self._rest.rfind(b"\n")
            if end >= 0:
                whole, self._rest = self._rest[:end], self._rest[end + 1 :]
                found = [line for line in map(bytes.strip, whole.split(b"\n")) if line]
                if found:
                    return found
                continue
            if conn.complete:
                last, self._rest = self._rest.strip(), b""
                return [last] if last else []
            stall = conn.loop.call_later(idle_timeout, conn.on_stall)
            try:
                await conn.wait()
            finally:
                stall.cancel()

    def release(self) -> None:
        """Give the connection back if the answer was read whole, else drop it."""
        self._timer.cancel()
        conn = self._conn
        if conn.complete and conn.keep_alive and not conn.closed:
            # The whole answer is in, so what its reader left (an SSE stream's blank line
            # after `[DONE]`) cannot be taken for the next answer's bytes.
            conn.take()
            self._upstream.put_back(conn)
        else:
            conn.abort()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Upstream:
    """A pool of keep-alive connections to the origin of `url`, with fixed headers.

    Paths given to `request` are from the origin's root, not below `url`'s path.
    """

    def __init__(self, url: str, headers: dict[str, str], connect_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        self.connect_timeout = connect_timeout
        authority = parts.netloc.rsplit("@", 1)[-1]
        fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._tail = f" HTTP/1.1\r\nHost: {authority}\r\n{fixed}".encode("latin-1")
        self._idle: deque[_Conn] = deque()
        self._closed = False

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Conn(loop),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
        return conn

    def _pooled(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < _IDLE_S:
                conn.reused = True
                return conn
            conn.abort()
        return None

    def put_back(self, conn: _Conn) -> None:
        """An idle connection, ready for the next exchange."""
        if self._closed:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def request(self, method: str, path: str, body: bytes | None, timeout: float) -> Response:
        """Send one request; returns once the answer's head is in.

        Never sent twice: a connection lost before the answer may have reached an upstream
        that began the work, and the router decides what to try next. A pooled connection
        the upstream closed while idle is seen closed here and not used.
        """
        head = [method.encode("latin-1"), b" ", path.encode("latin-1"), self._tail]
        if body is not None:
            head.append(b"Content-Length: %d\r\n\r\n" % len(body))
            head.append(body)
        else:
            head.append(b"\r\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = self._pooled()
        if conn is None:
            async with asyncio.timeout_at(deadline):
                conn = await self._connect()
        timer = loop.call_at(deadline, conn.on_timeout)
        try:
            conn.send(b"".join(head))
            while not conn.headers_done:
                await conn.wait()
        except BaseException:
            timer.cancel()
            conn.abort()
            raise
        return Response(self, conn, timer)

    async def close(self) -> None:
        """Close every idle connection; busy ones close when released."""
        self._closed = True
        while self._idle:
            self._idle.pop().abort()
