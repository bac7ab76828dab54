"""The two workloads driven through the real api server: CAS document writes and a tus upload."""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchlib import ApiServer, BenchError, expect_2xx

LOCATION = "bench"
MB = 1_000_000
MIB = 1 << 20


@dataclass
class Settings:
    """How long and how big each measurement is."""

    reps: int
    writers: int
    warmup_s: float
    duration_s: float
    upload_mib: int
    chunk_mib: int
    body_bytes: int
    settle_s: float


def document_body(size: int, writer: int) -> bytes:
    """A JSON document of exactly `size` bytes (at least ~40) that names a project."""
    head = f'{{"project":"p1","writer":{writer},"pad":"'
    tail = '"}'
    return (head + "x" * max(0, size - len(head) - len(tail)) + tail).encode()


def cas_writes(
    server: ApiServer, tag: str, body: bytes, s: Settings, *, prefix: str = "", verify: bool = True
) -> float:
    """Acknowledged CAS PUTs per second with `s.writers` concurrent keep-alive writers.

    `prefix` points the writers at another server's PUT route (the bare reference app);
    `verify` reads each document back at the end.
    """
    prefix = prefix or f"/v1/locations/{LOCATION}/docs/bench"
    counts = [0] * s.writers
    errors: list[BaseException] = []
    stop = threading.Event()
    ready = threading.Barrier(s.writers + 1)
    go = threading.Event()
    window: list[float] = []  # [start, end], set by the main thread before `go`
    auth = server.auth()

    def writer(i: int) -> None:
        try:
            conn = server.connect()
            path = f"{prefix}/{tag}-w{i}"
            headers = {**auth, "Content-Type": "application/json", "If-None-Match": "*"}
            resp = expect_2xx(conn.request("PUT", path, headers, body), f"PUT {path} (create)")
            headers = {**auth, "Content-Type": "application/json", "If-Match": ""}
            etag = resp.headers["etag"]
            ready.wait()
            go.wait()
            if not window:
                return
            start, end = window
            count = 0
            now = time.perf_counter()
            while now < end and not stop.is_set():
                headers["If-Match"] = etag
                resp = conn.request("PUT", path, headers, body)
                if not 200 <= resp.status < 300:
                    expect_2xx(resp, f"PUT {path} (If-Match {etag})")
                etag = resp.headers["etag"]
                now = time.perf_counter()
                if start <= now < end:
                    count += 1
            counts[i] = count
            if not verify:
                conn.close()
                return
            got = expect_2xx(conn.request("GET", path, auth), f"GET {path}")
            if got.headers.get("etag") != etag or got.body != body:
                raise BenchError(f"GET {path}: the last acknowledged write is not what is stored")
            conn.close()
        except BaseException as exc:
            errors.append(exc)
            stop.set()
            ready.abort()
            go.set()

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(s.writers)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass
    else:
        t0 = time.perf_counter()
        window.extend([t0 + s.warmup_s, t0 + s.warmup_s + s.duration_s])
    go.set()
    for t in threads:
        t.join()
    if errors:
        raise BenchError(f"CAS writer failed: {errors[0]}") from errors[0]
    return sum(counts) / s.duration_s


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tus_upload(
    server: ApiServer, data: bytes, chunk: int, filename: str, endpoint: str = "/v1/uploads"
) -> float:
    """Seconds from POST to the final PATCH's 204; on fieldbox the asset exists then.

    `endpoint` other than fieldbox's names a stock tus server (the bench's peer): the same
    requests, without fieldbox's location metadata and asset check.
    """
    fieldbox = endpoint == "/v1/uploads"
    conn = server.connect()
    view = memoryview(data)
    try:
        tus = {**server.auth(), "Tus-Resumable": "1.0.0"}
        meta = f"filename {_b64(filename)}"
        if fieldbox:
            meta = f"location {_b64(LOCATION)},{meta}"
        t0 = time.perf_counter()
        resp = conn.request(
            "POST", endpoint, {**tus, "Upload-Length": str(len(data)), "Upload-Metadata": meta}
        )
        # A stock tus server answers with an absolute URL; the connection needs the path.
        url = urlsplit(expect_2xx(resp, f"POST {endpoint}").headers["location"]).path
        offset = 0
        while offset < len(data):
            piece = view[offset : offset + chunk]
            headers = {
                **tus,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            }
            resp = expect_2xx(conn.request("PATCH", url, headers, piece), f"PATCH {url}")
            offset += len(piece)
            if int(resp.headers.get("upload-offset", "-1")) != offset:
                raise BenchError(f"PATCH {url}: Upload-Offset {resp.headers.get('upload-offset')}")
        elapsed = time.perf_counter() - t0
        if resp.status != 204 or (fieldbox and "fieldbox-asset-id" not in resp.headers):
            raise BenchError(f"final PATCH gave {resp.status} without Fieldbox-Asset-Id")
        return elapsed
    finally:
        conn.close()


def store_cas_writes(data_dir: Path, body: bytes, s: Settings) -> float:
    """CAS writes/s through `store.documents.put` from `s.writers` threads, no HTTP at all.

    The same conditional statement the api runs, one transaction (one fsync) per write, as
    the CLI and other in-process callers do: what the store costs without HTTP or batching.
    """
    from store import documents
    from store.config import StoreConfig
    from store.locations import Location, Locations
    from store.paths import Layout

    layout = Layout(data_dir)
    layout.ensure()
    locs = Locations(layout, StoreConfig())
    locs.create(Location(id=LOCATION, account="bench", geo_prefix="local", name="bench"))
    db = locs.db(LOCATION)
    counts = [0] * s.writers
    start = time.perf_counter() + s.warmup_s
    end = start + s.duration_s

    def writer(i: int) -> None:
        doc, _ = documents.put(db, "bench", f"w{i}", body, if_none_match=True)
        while (now := time.perf_counter()) < end:
            doc, _ = documents.put(db, "bench", f"w{i}", body, if_match=doc.etag)
            if now >= start:
                counts[i] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(s.writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    locs.close()
    return sum(counts) / s.duration_s


def sink_upload(server: ApiServer, data: bytes, chunk: int, name: str) -> float:
    """Seconds to PATCH `data` in `chunk`-byte pieces to the bare app's fsyncing sink."""
    conn = server.connect()
    view = memoryview(data)
    try:
        t0 = time.perf_counter()
        for offset in range(0, len(data), chunk):
            piece = view[offset : offset + chunk]
            expect_2xx(conn.request("PATCH", f"/sink/{name}", {}, piece), "PATCH /sink")
        return time.perf_counter() - t0
    finally:
        conn.close()
