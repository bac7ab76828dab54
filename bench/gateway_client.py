"""The client side of bench/bench_gateway.py: a lean keep-alive HTTP/1.1 client that reads
Content-Length and chunked answers and server-sent events as they arrive, and wrk.

Every path (direct, bare proxy, fieldbox, LiteLLM) is measured with the same client code
and the same prebuilt request bytes, so the client's own cost is the same on every side
and cancels out of the added latency.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import BenchError

CHAT_PATH = "/v1/chat/completions"


def chat_body(model: str, *, stream: bool, max_tokens: int, prompt: str = "Say hello.") -> bytes:
    """A chat completion request body (compact JSON)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def post_bytes(host: str, port: int, path: str, token: str, body: bytes) -> bytes:
    """One POST request, head and body, ready for `sendall`."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


@dataclass
class StreamResult:
    """One streamed answer: when its events came, relative to the moment the request went."""

    status: int
    first_event: float  # seconds to the first `data:` event of any kind
    token_times: list[float]  # seconds to each event carrying content
    done: bool  # `data: [DONE]` arrived


class Conn:
    """One persistent keep-alive connection; not thread-safe, one request at a time."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise BenchError(f"{self.host}:{self.port} closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def read_head(self) -> tuple[int, dict[str, str]]:
        """Status and lower-cased headers of the next response."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def body_parts(self, headers: dict[str, str]) -> Iterator[bytes]:
        """The body as it arrives: each chunk of a chunked body, or the whole of a sized one."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line().split(b";", 1)[0], 16)
                if size == 0:
                    while self._line():  # trailers, then the empty line
                        pass
                    return
                while len(self.buf) < size + 2:
                    self._fill()
                part = bytes(self.buf[:size])
                del self.buf[: size + 2]
                yield part
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        part = bytes(self.buf[:length])
        del self.buf[:length]
        yield part

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send a prebuilt request; the status and the whole body."""
        self.sock.sendall(request)
        status, headers = self.read_head()
        return status, b"".join(self.body_parts(headers))

    def stream(self, request: bytes) -> StreamResult:
        """Send a prebuilt streaming request and read its SSE events to the end."""
        start = time.perf_counter()
        self.sock.sendall(request)
        status, headers = self.read_head()
        if status != 200:
            body = b"".join(self.body_parts(headers))
            raise BenchError(f"stream answered HTTP {status}: {body[:300]!r}")
        first = -1.0
        tokens: list[float] = []
        done = False
        pending = b""
        for part in self.body_parts(headers):
            now = time.perf_counter() - start
            pending += part
            *events, pending = pending.split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    if first < 0:
                        first = now
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                    elif _has_content(payload):
                        tokens.append(now)
        return StreamResult(status, first, tokens, done)


def _has_content(payload: bytes) -> bool:
    try:
        chunk = json.loads(payload)
    except ValueError as exc:
        raise BenchError(f"bad SSE event: {payload[:200]!r}") from exc
    if "error" in chunk:
        raise BenchError(f"error event in stream: {payload[:300]!r}")
    choices = chunk.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def latencies(conn: Conn, request: bytes, n: int) -> list[float]:
    """Seconds for each of `n` sequential non-stream requests; every one must be a 200."""
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, body = conn.exchange(request)
        out.append(time.perf_counter() - t0)
        if status != 200 or b'"choices"' not in body:
            raise BenchError(f"chat completion answered HTTP {status}: {body[:300]!r}")
    return out


def ttfts(conn: Conn, request: bytes, n: int, tokens: int) -> list[float]:
    """Seconds to the first SSE data event of each of `n` sequential streams."""
    out: list[float] = []
    for _ in range(n):
        res = conn.stream(request)
        if not res.done or len(res.token_times) != tokens:
            raise BenchError(
                f"stream ended early: {len(res.token_times)} of {tokens} chunks, [DONE]={res.done}"
            )
        out.append(res.first_event)
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class WrkResult:
    """What one wrk run reports."""

    rps: float
    requests: int
    non_2xx: int
    socket_errors: str


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors:\s+(.*)")


def wrk_script(path: Path, body: bytes, token: str) -> Path:
    """A wrk Lua script that POSTs `body` with the bench key."""
    text = body.decode()
    if "]]" in text:
        raise BenchError("request body cannot go into a Lua long string")
    path.write_text(
        "wrk.method = 'POST'\n"
        f"wrk.body = [[{text}]]\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
        f"wrk.headers['Authorization'] = 'Bearer {token}'\n"
    )
    return path


def run_wrk(
    url: str, script: Path, *, connections: int, seconds: float, threads: int = 1
) -> WrkResult:
    """`wrk -c connections -d seconds`; BenchError if it fails or saw non-2xx answers."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except FileNotFoundError as exc:
        raise BenchError("wrk is not installed (apt-get install wrk)") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk against {url} did not finish") from exc
    text = out.stdout + out.stderr
    rps = _RPS.search(text)
    if out.returncode != 0 or rps is None:
        raise BenchError(f"wrk failed ({out.returncode}): {text.strip()[-500:]}")
    total = _TOTAL.search(text)
    non2xx = _NON2XX.search(text)
    sock = _SOCKET.search(text)
    result = WrkResult(
        float(rps.group(1)),
        int(total.group(1)) if total else 0,
        int(non2xx.group(1)) if non2xx else 0,
        sock.group(1).strip() if sock else "",
    )
    if result.non_2xx:
        raise BenchError(f"wrk against {url}: {result.non_2xx} non-2xx answers")
    return result
