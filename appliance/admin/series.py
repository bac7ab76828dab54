"""Charts' data: the gateway's last hour from the telemetry spool, the outbox over time.

The gateway writes one telemetry record per model call (`ts`, `latency_ms`, `ttft_ms`) into
`telemetry/{yyyy-mm-dd}/{hh}-*.jsonl` (UTC); the last hour is read from those files (the
current and previous hours' only) and bucketed per minute. The outbox backlog has no
history on disk, so the api samples it (and the bridge's status) every `SAMPLE_EVERY_S`
into a bounded ring: the chart starts when the api did.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog

from bridge.daemon import read_status
from store.outbox import Outbox
from store.paths import Layout

SAMPLE_EVERY_S = 15.0
_HOUR = 3600
_MAX_LINES = 200_000


def _spool_files(telemetry_dir: Path, now: float) -> list[Path]:
    out: list[Path] = []
    for at in (now - _HOUR, now):
        day = time.strftime("%Y-%m-%d", time.gmtime(at))
        hour = time.strftime("%H", time.gmtime(at))
        out.extend(sorted((telemetry_dir / day).glob(f"{hour}-*.jsonl")))
    return sorted(set(out))


def gateway_records(telemetry_dir: Path, now: float | None = None) -> list[dict[str, Any]]:
    """The gateway's telemetry records of the last hour, oldest first."""
    now = time.time() if now is None else now
    records: list[dict[str, Any]] = []
    for path in _spool_files(telemetry_dir, now):
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines[-_MAX_LINES:]:
            try:
                rec = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue  # a line being written right now
            if isinstance(rec, dict) and now - float(rec.get("ts") or 0) <= _HOUR:
                records.append(rec)
    records.sort(key=lambda r: float(r.get("ts") or 0))
    return records


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def gateway_series(records: list[dict[str, Any]], now: float | None = None) -> dict[str, Any]:
    """Per-minute requests/s, mean latency and mean time-to-first-token (ms), last 60 min."""
    now = time.time() if now is None else now
    end = int(now // 60) * 60
    starts = [end - 60 * i for i in range(59, -1, -1)]
    buckets: dict[int, list[dict[str, Any]]] = {s: [] for s in starts}
    for rec in records:
        minute = int(float(rec.get("ts") or 0) // 60) * 60
        if minute in buckets:
            buckets[minute].append(rec)
    latency, ttft = [], []
    for s in starts:
        got = buckets[s]
        latency.append(_mean([float(r["latency_ms"]) for r in got if r.get("latency_ms")]))
        ttft.append(_mean([float(r["ttft_ms"]) for r in got if r.get("ttft_ms") is not None]))
    return {
        "t": starts,
        "rps": [round(len(buckets[s]) / 60, 4) for s in starts],
        "latency_ms": latency,
        "ttft_ms": ttft,
        "total": len(records),
        "errors": sum(1 for r in records if r.get("error")),
    }


@dataclass(frozen=True)
class Sample:
    """The outbox and the bridge at one instant."""

    t: float
    items: int
    bytes: int
    bytes_sent: int | None
    spool_bytes: int | None


class Sampler:
    """A ring of samples (one hour at the default rate), filled by the api's lifespan task."""

    def __init__(self, layout: Layout, outbox: Outbox, size: int = 240) -> None:
        self.layout = layout
        self.outbox = outbox
        self.samples: deque[Sample] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Stop sampling; waits for a sample in progress (the outbox closes after this)."""
        with self._lock:
            self._closed = True

    def sample(self) -> Sample | None:
        """Take one sample now (None once closed)."""
        with self._lock:
            return None if self._closed else self._sample()

    def _sample(self) -> Sample:
        backlog = self.outbox.backlog()
        bridge = read_status(self.layout) or {}
        uploader = bridge.get("uploader") or {}
        telemetry = bridge.get("telemetry") or {}
        s = Sample(
            time.time(),
            backlog.items,
            backlog.bytes,
            uploader.get("bytes_sent") if bridge.get("alive") else None,
            telemetry.get("spool_bytes"),
        )
        self.samples.append(s)
        return s

    async def run(self, every_s: float = SAMPLE_EVERY_S) -> None:
        """Sample forever (cancelled with the app)."""
        log = structlog.get_logger("fieldbox.admin")
        while True:
            try:
                await asyncio.to_thread(self.sample)
            except Exception as exc:  # a bad sample must not end the series
                log.warning("admin_sample_failed", error=repr(exc))
            await asyncio.sleep(every_s)

    def series(self) -> dict[str, Any]:
        """Backlog items and bytes over time, and upload throughput (bytes/s) between samples."""
        samples = list(self.samples)
        rate: list[float | None] = [None]
        for a, b in itertools.pairwise(samples):
            if a.bytes_sent is None or b.bytes_sent is None or b.t <= a.t:
                rate.append(None)
            else:
                rate.append(round(max(0, b.bytes_sent - a.bytes_sent) / (b.t - a.t), 1))
        return {
            "t": [round(s.t) for s in samples],
            "items": [s.items for s in samples],
            "bytes": [s.bytes for s in samples],
            "throughput": rate[: len(samples)],
        }
