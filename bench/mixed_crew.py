"""Simulated crew devices for bench/bench_mixed.py, run as a process of their own.

    python bench/mixed_crew.py SPEC_JSON > result.json

The spec names the api and gateway, the key, the device ids this process plays, when the
phase starts (wall clock) and how long it lasts. Each device runs three loops at once, as
a phone in the field does: CAS writes and reads of its own document, streamed chat
questions through the gateway, and tus uploads (even devices 64 KiB PATCHes, odd devices
4 MiB PATCHes). Only calls that start inside the window count. The result is the
latencies, every status seen, the bytes acknowledged and the failures, as JSON.

Several of these processes share the devices of one phase, so the client's own GIL does
not become the latency being measured.
"""

from __future__ import annotations

import base64
import json
import random
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


def _call(
    p: Phase, tally: Tally, what: str, conn: RawHttp | None, req: tuple[Any, ...]
) -> tuple[RawHttp | None, HttpResponse | None]:
    """One api request; timeouts and broken connections are counted and the socket renewed."""
    if conn is None:
        conn = RawHttp(*p.api, timeout=p.api_timeout_s)
    try:
        resp = conn.request(*req)
    except TimeoutError:
        tally.statuses["timeout"] += 1
        tally.failures.append(f"{what}: no answer within {p.api_timeout_s:g} s")
        conn.close()
        return None, None
    except (OSError, BenchError) as exc:
        tally.statuses["error"] += 1
        tally.failures.append(f"{what}: {type(exc).__name__}: {exc}")
        conn.close()
        return None, None
    tally.status(what, resp.status, resp.headers)
    return conn, resp


def docs_loop(p: Phase, dev: int, tally: Tally) -> None:
    """CAS writes (If-Match) and reads of the device's own document."""
    auth = {"Authorization": f"Bearer {p.token}"}
    path = f"/v1/locations/{p.location}/docs/crew/{p.tag}-d{dev}"
    body = json.dumps({"device": dev, "notes": "x" * 400}).encode()
    create = {**auth, "Content-Type": "application/json", "If-None-Match": "*"}
    conn, resp = _call(p, Tally(), "create", None, ("PUT", path, create, body))
    if resp is None or resp.status != 201:
        tally.failures.append(f"create {path}: {resp.status if resp else 'no answer'}")
        return
    etag = resp.headers["etag"]
    while time.time() < p.start_at:
        time.sleep(0.01)
    while (t0 := time.time()) < p.end:
        counted = tally if p.inside(t0) else Tally()
        head = {**auth, "Content-Type": "application/json", "If-Match": etag}
        start = time.perf_counter()
        conn, resp = _call(p, counted, "CAS write", conn, ("PUT", path, head, body))
        if resp is not None and resp.status == 200:
            counted.write_ms.append((time.perf_counter() - start) * 1000)
            etag = resp.headers["etag"]
        elif resp is not None:
            _refused(resp.status, resp.headers, p.end)
            if resp.status not in (429, 503):
                counted.failures.append(f"CAS write: HTTP {resp.status} {resp.body[:200]!r}")
        start = time.perf_counter()
        conn, resp = _call(p, counted, "CAS read", conn, ("GET", path, auth))
        if resp is not None and resp.status == 200:
            counted.read_ms.append((time.perf_counter() - start) * 1000)
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
    conn: RawHttp | None = None
    n = 0
    while time.time() < p.start_at:
        time.sleep(0.01)
    while time.time() < p.end:
        n += 1
        # A new blob each time: content addressing must not shortcut a repeat.
        stamp = f"{p.tag}-{dev}-{n}-{time.time_ns()}".encode().ljust(64, b"-")
        data[:64] = stamp[:64]
        meta = f"location {_b64(p.location)},filename {_b64(f'{p.tag}-{dev}-{n}.bin')}"
        t0 = time.time()
        counted = tally if p.inside(t0) else Tally()
        head = {**tus, "Upload-Length": str(size), "Upload-Metadata": meta}
        conn, resp = _call(p, counted, "tus POST", conn, ("POST", "/v1/uploads", head))
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
            conn, resp = _call(p, counted, "tus PATCH", conn, ("PATCH", url, head, piece))
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
