"""A fast fake OpenAI upstream for bench/bench_gateway.py: canned answers, no model.

    python bench/fake_openai.py --port 9000 [--host 127.0.0.1] [--chunks 16] [--slow-ms 20]
                                [--workers 1]

It speaks just enough HTTP/1.1 for the clients the bench puts in front of it (the bench's
own socket client, wrk, fieldbox's aiohttp pool, LiteLLM's httpx/aiohttp clients):
keep-alive, Content-Length or chunked request bodies, pipelined requests in order.

- `POST …/chat/completions` → a canned `chat.completion` (Content-Length), or with
  `"stream": true` a canned SSE stream (chunked, `text/event-stream`): a role chunk, then
  `--chunks` content chunks, a finish chunk, a usage chunk when `include_usage` was asked
  for, and `data: [DONE]`. The headers and the first chunk go out in one write, the rest in
  a second one on the next loop pass, so a proxy's time to first token is its own relay
  time and not the time to read the whole stream.
- the same non-stream call for model `bench-model-slow` → the same answer, `--slow-ms`
  later (a timer, no CPU): an upstream at a fast model server's pace, for the reference
  row that shows what the proxies keep of an upstream that is not instant.
- `GET …/models` (fieldbox's health probe) and `GET /health*` → 200 with a model list.
- anything else → 404.

Every answer is built once at start; a request costs one header scan and one write. It is
a raw asyncio Protocol on uvloop (no HTTP framework): on this 2-core machine it answers
several times faster than any Python proxy in front of it, so in the proxied runs it is
never what limits them.

One process by default (`--workers 1`). With two cores, a second upstream process would
only compete with wrk for the core wrk needs in the direct run, and sit idle behind a
proxy; more workers (SO_REUSEPORT, one loop each) are there for machines with more cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from typing import Any, cast

MODEL = "bench-model"
SLOW_MODEL = "bench-model-slow"
SLOW_MODEL_JSON = b'"bench-model-slow"'
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _http(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Canned:
    """Every answer the fake gives, as bytes ready to write."""

    def __init__(self, chunks: int) -> None:
        created = int(time.time())
        words = [" word"] * chunks
        usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
        completion = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": created,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(words).strip()},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        self.completion = _http("200 OK", "application/json", _json(completion))
        self.models = _http(
            "200 OK",
            "application/json",
            _json(
                {
                    "object": "list",
                    "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}],
                }
            ),
        )
        self.not_found = _http(
            "404 Not Found", "application/json", _json({"error": {"message": "not found"}})
        )

        def event(delta: dict[str, Any], finish: str | None) -> bytes:
            chunk = {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "system_fingerprint": "fp_bench",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            return _chunk(b"data: " + _json(chunk) + b"\n\n")

        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.stream_first = head + event({"role": "assistant", "content": ""}, None)
        body = b"".join(event({"content": w}, None) for w in words)
        body += event({}, "stop")
        usage_event = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [],
            "usage": usage,
        }
        done = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.stream_rest = body + done
        self.stream_rest_usage = body + _chunk(b"data: " + _json(usage_event) + b"\n\n") + done


class FakeOpenAI(asyncio.Protocol):
    """One client connection."""

    def __init__(self, canned: Canned, slow_s: float) -> None:
        self.canned = canned
        self.slow_s = slow_s
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False  # an answer is still to be written: later requests wait for it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self.serve()

    def serve(self) -> None:
        """Answer every complete request in the buffer, in order."""
        transport, canned = self.transport, self.canned
        assert transport is not None
        buf = self.buf
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[: end + 2]
            start = end + 4
            if (m := _CONTENT_LENGTH.search(head)) is not None:
                stop = start + int(m.group(1))
                if len(buf) < stop:
                    break
            elif _CHUNKED.search(head) is not None:
                # JSON bodies hold no raw CR/LF, so the last-chunk marker cannot occur early.
                marker = buf.find(b"\r\n0\r\n\r\n", start - 2)
                if marker < 0:
                    break
                stop = marker + 7
            else:
                stop = start
            body = buf[start:stop]
            buf = buf[stop:]
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            close = _CLOSE.search(head) is not None
            if method == b"POST" and path.endswith(b"/chat/completions"):
                if _STREAM_TRUE.search(body) is None:
                    if SLOW_MODEL_JSON in body:  # a model server's pace: answer later
                        self._later(self.slow_s, canned.completion, close, buf)
                        return
                    transport.write(canned.completion)
                else:
                    transport.write(canned.stream_first)
                    rest_bytes = (
                        canned.stream_rest_usage if b"include_usage" in body else canned.stream_rest
                    )
                    self._later(0, rest_bytes, close, buf)
                    return
            elif method == b"GET" and (path.endswith(b"/models") or path.startswith(b"/health")):
                transport.write(canned.models)
            else:
                transport.write(canned.not_found)
            if close:
                transport.close()
                return
        self.buf = buf

    def _later(self, delay: float, data: bytes, close: bool, buf: bytes) -> None:
        """Write `data` after `delay` (0: on the next loop pass); hold later requests."""
        self.busy = True
        self.buf = buf
        loop = asyncio.get_running_loop()
        if delay > 0:
            loop.call_later(delay, self._finish, data, close)
        else:
            loop.call_soon(self._finish, data, close)

    def _finish(self, data: bytes, close: bool) -> None:
        transport = self.transport
        self.busy = False
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if close:
            transport.close()
            return
        if self.buf:
            self.serve()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve(sock: socket.socket, chunks: int, slow_s: float) -> None:
    """Run one event loop answering on `sock` until SIGTERM/SIGINT."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the stdlib loop works too, a little slower
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        canned = Canned(chunks)
        server = await loop.create_server(
            lambda: FakeOpenAI(canned, slow_s), sock=sock, backlog=4096
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, bind, fork workers if asked, serve."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=16, help="content chunks per stream")
    ap.add_argument(
        "--slow-ms", type=float, default=20.0, help=f"answer delay for model {SLOW_MODEL}"
    )
    ap.add_argument("--workers", type=int, default=1, help="processes (SO_REUSEPORT)")
    args = ap.parse_args(argv)

    def bind() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if args.workers > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((args.host, args.port))
        sock.listen(4096)
        sock.setblocking(False)
        return sock

    children: list[int] = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            serve(bind(), args.chunks, args.slow_ms / 1000)
            os._exit(0)
        children.append(pid)
    try:
        serve(bind(), args.chunks, args.slow_ms / 1000)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
