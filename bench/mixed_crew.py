"""Simulated crew devices for bench/bench_mixed.py, run as a process of their own.

    python bench/mixed_crew.py SPEC_JSON > result.json

The spec names the api and gateway, the key, the device ids this process plays, when the
phase starts (wall clock) and how long it lasts. Each device runs three loops at once, as
a phone in the field does: CAS writes and reads of its own document, streamed chat
questions through the gateway, and tus uploads (even devices 64 KiB PATCHes, odd devices
4 MiB PATCHes). Only calls that start inside the window count. The result is the
latencies, every status seen, the bytes acknowledged and the failures, as JSON.

Api connections are kept alive as a client's pool keeps them, and, like such a pool, a
device never sends on one the server may already have closed for idleness: one idle for
`CLIENT_IDLE_S` (under uvicorn's 5 s keep-alive) or one the server closed while it was
idle (EOF waiting on it) is replaced before the request, outside the timed part, and
counted as a reconnect, not an error. A connection that breaks once a request is sent is
an error, as before. Each device also opens (and warms with one uncounted read) its
connections just before the window, so the window never starts on its setup's sockets.

Several of these processes share the devices of one phase, so the client's own GIL does
not become the latency being measured.
"""

from __future__ import annotations

import base64
import json
import random
import select
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BenchError, HttpResponse, RawHttp
from gateway_client import CHAT_PATH, Conn, chat_body, post_bytes

KIB = 1024
MIB = 1024 * 1024
BACKOFF_CAP_S = 5.0  # a refused caller waits Retry-After, at most this long in a phase
# uvicorn (the api) closes a keep-alive connection idle for 5 s; a request sent as it does
# is lost in the close, so a client must stop reusing one well before that.
CLIENT_IDLE_S = 4.0
# Devices open their connections this long before the window, so the window starts on
# fresh sockets while the warm-up reads are over before it opens.
PREOPEN_S = 1.0


@dataclass
class Tally:
    """What one device saw in the window (merged over devices at the end)."""

    write_ms: list[float] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    upload_bytes: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def status(self, what: str, resp_status: int, headers: dict[str, str]) -> None:
        """Count a status; a 429/503 without Retry-After is a failure of the box."""
        self.statuses[str(resp_status)] += 1
        if resp_status in (429, 503) and "retry-after" not in headers:
            self.statuses["no_retry_after"] += 1
            self.failures.append(f"{what}: {resp_status} without Retry-After")


@dataclass
class Phase:
    """The spec of one process's share of a phase."""

    api: tuple[str, int]
    gateway: tuple[str, int]
    token: str
    location: str
    devices: list[int]
    tag: str
    start_at: float
    duration_s: float
    api_timeout_s: float
    chat_timeout_s: float
    chat_tokens: int
    chat_think_s: float
    doc_think_s: float
    upload_think_s: float
    small_upload: int
    large_upload: int

    def inside(self, t: float) -> bool:
        """Whether a call started at wall time `t` counts."""
        return self.start_at <= t < self.start_at + self.duration_s

    @property
    def end(self) -> float:
        """Wall time the window closes."""
        return self.start_at + self.duration_s


def _refused(resp_status: int, headers: dict[str, str], stop_at: float) -> None:
    """Back off as a polite client does: Retry-After, capped, never past the window."""
    if resp_status in (429, 503):
        try:
            wait = float(headers.get("retry-after", "1"))
        except ValueError:
            wait = 1.0
        time.sleep(max(0.0, min(wait, BACKOFF_CAP_S, stop_at - time.time())))


class ApiConn(RawHttp):
    """A pooled api connection that knows when it was last used."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.last_used = time.monotonic()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | memoryview = b"",
    ) -> HttpResponse:
        """As RawHttp.request; the idle clock restarts once the response is read."""
        resp = super().request(method, path, headers, body)
        self.last_used = time.monotonic()
        return resp

    def stale(self) -> str | None:
        """Why this idle connection must not carry the next request, or None."""
        if time.monotonic() - self.last_used >= CLIENT_IDLE_S:
            return "reconnect_idle"
        # Readable while no request is outstanding: the server's FIN (or stray bytes);
        # either way the next request on it would fail before the box even saw it.
        readable, _, _ = select.select([self.sock], [], [], 0)
        return "reconnect_closed" if readable else None


def _ready(p: Phase, tally: Tally, conn: ApiConn | None) -> ApiConn:
    """`conn`, or a new connection in place of a missing or stale one (see the docstring)."""
    if conn is not None:
        why = conn.stale()
        if why is None:
            return conn
        tally.statuses[why] += 1
        conn.close()
    return ApiConn(*p.api, timeout=p.api_timeout_s)


def _call(
    p: Phase, tally: Tally, what: str, conn: ApiConn | None, req: tuple[Any, ...]
) -> tuple[ApiConn | None, HttpResponse | None, float]:
    """One api request and its ms (connecting excluded); failures counted, socket renewed."""
    try:
        conn = _ready(p, tally, conn)
    except OSError as exc:
        tally.statuses["error"] += 1
        tally.failures.append(f"{what}: connect: {type(exc).__name__}: {exc}")
        return None, None, 0.0
    start = time.perf_counter()
    try:
        resp = conn.request(*req)
    except TimeoutError:
        tally.statuses["timeout"] += 1
        tally.failures.append(f"{what}: no answer within {p.api_timeout_s:g} s")
        conn.close()
        return None, None, 0.0
    except (OSError, BenchError) as exc:
        tally.statuses["error"] += 1
        tally.failures.append(f"{what}: {type(exc).__name__}: {exc}")
        conn.close()
        return None, None, 0.0
    ms = (time.perf_counter() - start) * 1000
    tally.status(what, resp.status, resp.headers)
    return conn, resp, ms


def _until(t: float) -> None:
    """Sleep until wall time `t`."""
    while time.time() < t:
        time.sleep(0.01)


def docs_loop(p: Phase, dev: int, tally: Tally) -> None:
    """CAS writes (If-Match) and reads of the device's own document."""
    auth = {"Authorization": f"Bearer {p.token}"}
    path = f"/v1/locations/{p.location}/docs/crew/{p.tag}-d{dev}"
    body = json.dumps({"device": dev, "notes": "x" * 400}).encode()
    create = {**auth, "Content-Type": "application/json", "If-None-Match": "*"}
    conn, resp, _ = _call(p, Tally(), "create", None, ("PUT", path, create, body))
    if resp is None or resp.status != 201:
        tally.failures.append(f"create {path}: {resp.status if resp else 'no answer'}")
        return
    etag = resp.headers["etag"]
    if conn is not None:
        conn.close()
    # The setup's connection may sit idle past the api's keep-alive (N=64 starts ~5 s
    # after its setup): a fresh one, warmed with one uncounted read, starts the window.
    _until(p.start_at - PREOPEN_S)
    warm = Tally()
    conn, _, _ = _call(p, warm, "warm read before the window", None, ("GET", path, auth))
    tally.failures += warm.failures  # outside the window, yet still the box failing
    _until(p.start_at)
    while (t0 := time.time()) < p.end:
        counted = tally if p.inside(t0) else Tally()
        head = {**auth, "Content-Type": "application/json", "If-Match": etag}
        conn, resp, ms = _call(p, counted, "CAS write", conn, ("PUT", path, head, body))
        if resp is not None and resp.status == 200:
            counted.write_ms.append(ms)
            etag = resp.headers["etag"]
        elif resp is not None:
            _refused(resp.status, resp.headers, p.end)
            if resp.status not in (429, 503):
                counted.failures.append(f"CAS write: HTTP {resp.status} {resp.body[:200]!r}")
        conn, resp, ms = _call(p, counted, "CAS read", conn, ("GET", path, auth))
        if resp is not None and resp.status == 200:
            counted.read_ms.append(ms)
            if resp.headers.get("etag") != etag:
                counted.failures.append("CAS read: not the last acknowledged write")
        elif resp is not None:
            _refused(resp.status, resp.headers, p.end)
        time.sleep(p.doc_think_s * random.uniform(0.5, 1.5))
    if conn is not None:
        conn.close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def upload_loop(p: Phase, dev: int, tally: Tally) -> None:
    """tus uploads one after another: POST, then PATCHes of 64 KiB or 4 MiB."""
    chunk, size = (64 * KIB, p.small_upload) if dev % 2 == 0 else (4 * MIB, p.large_upload)
    data = memoryview(bytearray(random.randbytes(size)))
    tus = {"Authorization": f"Bearer {p.token}", "Tus-Resumable": "1.0.0"}
    _until(p.start_at - PREOPEN_S)
    conn: ApiConn | None = None
    try:
        conn = ApiConn(*p.api, timeout=p.api_timeout_s)
    except OSError as exc:
        tally.failures.append(f"tus: connect before the window: {exc}")
    n = 0
    _until(p.start_at)
    while time.time() < p.end:
        n += 1
        # A new blob each time: content addressing must not shortcut a repeat.
        stamp = f"{p.tag}-{dev}-{n}-{time.time_ns()}".encode().ljust(64, b"-")
        data[:64] = stamp[:64]
        meta = f"location {_b64(p.location)},filename {_b64(f'{p.tag}-{dev}-{n}.bin')}"
        t0 = time.time()
        counted = tally if p.inside(t0) else Tally()
        head = {**tus, "Upload-Length": str(size), "Upload-Metadata": meta}
        conn, resp, _ = _call(p, counted, "tus POST", conn, ("POST", "/v1/uploads", head))
        if resp is None or resp.status != 201:
            if resp is not None:
                _refused(resp.status, resp.headers, p.end)
            continue
        url = resp.headers["location"]
        offset = 0
        while offset < size and time.time() < p.end:
            piece = data[offset : offset + chunk]
            head = {
                **tus,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            }
            t1 = time.time()
            counted = tally if p.inside(t1) else Tally()
            conn, resp, _ = _call(p, counted, "tus PATCH", conn, ("PATCH", url, head, piece))
            if resp is None:
                break
            if resp.status != 204:
                _refused(resp.status, resp.headers, p.end)
                if resp.status not in (429, 503):
                    counted.failures.append(f"tus PATCH: HTTP {resp.status}")
                break
            offset += len(piece)
            counted.upload_bytes += len(piece)
        time.sleep(p.upload_think_s * random.uniform(0.5, 1.5))
    if conn is not None:
        conn.close()


def _stream_ttft(conn: Conn, request: bytes, tally: Tally) -> float | None:
    """Send one streamed chat; seconds to the first content token, None when refused."""
    start = time.perf_counter()
    conn.sock.sendall(request)
    status, headers = conn.read_head()
    tally.status("chat", status, headers)
    if status != 200:
        body = b"".join(conn.body_parts(headers))
        if status not in (429, 503):
            tally.failures.append(f"chat: HTTP {status} {body[:200]!r}")
        else:
            _refused(status, headers, float("inf"))
        return None
    first: float | None = None
    done = False
    pending = b""
    for part in conn.body_parts(headers):
        pending += part
        *events, pending = pending.split(b"\n\n")
        for event in events:
            payload = event.partition(b"data:")[2].strip()
            if payload == b"[DONE]":
                done = True
            elif payload and first is None:
                chunk = json.loads(payload)
                if "error" in chunk:
                    tally.failures.append(f"chat: error event {payload[:200]!r}")
                    return None
                delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
                if delta.get("content"):
                    first = time.perf_counter() - start
    if not done:
        tally.failures.append("chat: stream ended without [DONE]")
    return first


def chat_loop(p: Phase, dev: int, tally: Tally) -> None:
    """Streamed chat questions through the gateway, one at a time, with a pause between."""
    host, port = p.gateway
    prompt = f"Crew {dev}: list two checks for a cracked concrete pillar."
    request = post_bytes(
        host,
        port,
        CHAT_PATH,
        p.token,
        chat_body("smollm2-135m", stream=True, max_tokens=p.chat_tokens, prompt=prompt),
    )
    conn: Conn | None = None
    # Devices do not all ask in the same instant.
    time.sleep(max(0.0, p.start_at - time.time()) + random.uniform(0, p.chat_think_s))
    while (t0 := time.time()) < p.end:
        counted = tally if p.inside(t0) else Tally()
        try:
            if conn is None:
                conn = Conn(host, port, timeout=p.chat_timeout_s)
            ttft = _stream_ttft(conn, request, counted)
            if ttft is not None:
                counted.ttft_ms.append(ttft * 1000)
        except TimeoutError:
            counted.statuses["timeout"] += 1
            counted.failures.append(f"chat: no token within {p.chat_timeout_s:g} s")
            _drop(conn)
            conn = None
        except (OSError, BenchError, ValueError) as exc:
            counted.statuses["error"] += 1
            counted.failures.append(f"chat: {type(exc).__name__}: {exc}")
            _drop(conn)
            conn = None
        # Past the gateway's keep-alive (uvicorn's 5 s) an idle connection is closed by
        # the server, as HTTP allows; a phone asking again later opens a new one.
        _drop(conn)
        conn = None
        time.sleep(p.chat_think_s * random.uniform(0.5, 1.5))


def _drop(conn: Conn | None) -> None:
    if conn is not None:
        conn.close()


def run(p: Phase) -> dict[str, Any]:
    """Run every device's loops to the end of the window; the merged tally as a dict."""
    tallies: list[Tally] = []
    threads: list[threading.Thread] = []
    for dev in p.devices:
        for loop in (docs_loop, chat_loop, upload_loop):
            tally = Tally()
            tallies.append(tally)
            threads.append(threading.Thread(target=loop, args=(p, dev, tally), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        # A call in flight at the window's end finishes (or times out) before we report.
        t.join(p.end - time.time() + max(p.api_timeout_s, p.chat_timeout_s) + 30)
    out: dict[str, Any] = {"write_ms": [], "read_ms": [], "ttft_ms": [], "upload_bytes": 0}
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    for tl in tallies:
        out["write_ms"] += tl.write_ms
        out["read_ms"] += tl.read_ms
        out["ttft_ms"] += tl.ttft_ms
        out["upload_bytes"] += tl.upload_bytes
        statuses.update(tl.statuses)
        failures += tl.failures
    if any(t.is_alive() for t in threads):
        failures.append("a device loop was still running long after the window closed")
        statuses["timeout"] += 1
    out["statuses"] = dict(statuses)
    out["failures"] = failures[:50]
    out["failure_count"] = len(failures)
    return out


def main() -> int:
    """Read the spec from argv, run, print the result."""
    spec = json.loads(sys.argv[1])
    spec["api"] = tuple(spec["api"])
    spec["gateway"] = tuple(spec["gateway"])
    print(json.dumps(run(Phase(**spec))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
