"""Bounds on a request's head, enforced while uvicorn parses it: 414 for a long target, 431
for long header fields, 400 for an unparsable head, each as a JSON error in the serving app's
dialect (uvicorn's own answer would be plain text).

uvicorn's httptools protocol keeps every header it is sent (llhttp has no limit of its own),
so a client could make the box hold any amount of memory before the app sees the request;
h11's own limit answers a plain-text 400. The limits here are RFC 9110's advice made
concrete, and no fieldbox client comes near them (tus metadata is a few hundred bytes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_TARGET_BYTES = 8 * 1024
"""Longest request target (path and query) served; longer is 414."""
MAX_HEADER_BYTES = 32 * 1024
"""Most bytes of header fields (names, values, separators) in one request; more is 431."""
_DISCARD_S = 2.0  # how long a refused client may go on sending before the socket closes
_DISCARD_BYTES = 4 * 1024 * 1024

ErrorBody = Callable[[str, int, str], Any]
"""(path, status, message) -> the JSON error body of the serving app's dialect."""


class _BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head past the limits above."""

    error_body: ErrorBody

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._field_bytes = 0  # header fields as parsed
        self._raw_bytes = 0  # bytes read while the head is unfinished
        self._in_head = False
        self._refusal: tuple[int, str] | None = None
        self._discarded = -1  # >= 0 once refused: bytes read and dropped since

    def on_message_begin(self) -> None:
        """A new request: its head is counted from zero."""
        super().on_message_begin()
        self._field_bytes = self._raw_bytes = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        """Count the target; past the limit, stop parsing (the parser then reports 400)."""
        super().on_url(url)
        if len(self.url) > MAX_TARGET_BYTES:
            self._refuse_while_parsing(414, f"request target longer than {MAX_TARGET_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count one header field; past the limit, stop parsing."""
        super().on_header(name, value)
        self._field_bytes += len(name) + len(value) + 4
        if self._field_bytes > MAX_HEADER_BYTES:
            self._refuse_while_parsing(431, _HEADERS_MESSAGE)

    def on_headers_complete(self) -> None:
        """The head is whole: hand the request to the app as uvicorn does."""
        self._in_head = False
        super().on_headers_complete()
        self.cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does; also refuse a single field that never ends."""
        if self._discarded >= 0:
            self._discarded += len(data)
            if self._discarded > _DISCARD_BYTES:
                self.transport.close()
            return
        super().data_received(data)
        # llhttp buffers a field until its end: a field that never ends is counted raw.
        if self._in_head and self._discarded < 0:
            self._raw_bytes += len(data)
            if self._raw_bytes > MAX_TARGET_BYTES + MAX_HEADER_BYTES:
                self._refusal = (431, _HEADERS_MESSAGE)
                self._send_refusal()

    def _refuse_while_parsing(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        # The parser turns this into HttpParserCallbackError; uvicorn then calls
        # send_400_response, which sends the refusal instead.
        raise ValueError(message)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to an unparsable request, as a JSON error of the app's dialect."""
        if self._refusal is None:
            self._refusal = (400, "malformed HTTP request")
        self._send_refusal()

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        status, message = self._refusal
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        body = json.dumps(type(self).error_body(path, status, message)).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            "x-content-type-options: nosniff\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        # Closing with the client's unread bytes in the socket would reset the connection
        # before it reads the answer: stop writing, drop what still comes, close soon.
        self._discarded = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(_DISCARD_S, self.transport.close)


class _HeadWithBody:
    """The transport a request's cycle writes through: a response's head waits for the
    first piece of its body, so the two leave in one system call (uvicorn writes them
    apart). A head whose body is not sent at once goes out alone at the end of this turn of
    the event loop; everything else is the real transport's.
    """

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Hold a response head; write anything else at once, after a held head."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif isinstance(data, bytes) and data.startswith(b"HTTP/1.1 "):
            self._held = data
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        """Close after writing what is held."""
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_HEADERS_MESSAGE = f"request header fields longer than {MAX_HEADER_BYTES} bytes in all"


def bounded_protocol(error_body: ErrorBody) -> type[asyncio.Protocol]:
    """uvicorn's `http` protocol class for an app whose errors `error_body` shapes."""
    return type("BoundedHead", (_BoundedHead,), {"error_body": staticmethod(error_body)})
