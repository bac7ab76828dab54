"""The sync section's facts (bridge status file, outbox, windows) and its "sync now" button.

"Sync now" runs one pass of the bridge's uploader (`Uploader.drain_once`, what
`fieldbox sync now` runs) in a thread of the api, with its own stores, after making every
waiting row due. Rows the bridge daemon is sending at that moment are left to it. One pass
at a time; the page shows the last pass's result.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog

from appliance.config import FieldboxConfig
from bridge.daemon import now_in, read_status
from bridge.windows import next_change, upload_allowed
from store.outbox import Outbox
from store.paths import Layout


def _errors(bridge: dict[str, Any]) -> list[dict[str, Any]]:
    """Every `last_error` the bridge's parts report, newest first."""
    out = []
    for part in ("outbox", "uploader", "telemetry", "litestream", "drop_folder"):
        section = bridge.get(part)
        if isinstance(section, dict) and section.get("last_error"):
            at = section.get("last_error_at")
            out.append({"part": part, "error": str(section["last_error"]), "at": at})
    out.sort(key=lambda e: -float(e["at"] or 0))
    return out


def litestream_rows(bridge: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-database replication rows as the bridge reports them (any shape it uses)."""
    section = bridge.get("litestream")
    if not isinstance(section, dict):
        return []
    dbs = section.get("databases") or section.get("dbs")
    if isinstance(dbs, dict):
        return [
            {"db": name, **(v if isinstance(v, dict) else {"value": v})} for name, v in dbs.items()
        ]
    if isinstance(dbs, list):
        return [d for d in dbs if isinstance(d, dict)]
    return [{"db": "(all)", **{k: v for k, v in section.items() if not isinstance(v, dict | list)}}]


def sync_facts(cfg: FieldboxConfig, layout: Layout, outbox: Outbox) -> dict[str, Any]:
    """Everything the sync section shows, with `bridge` None when no bridge runs."""
    bridge = read_status(layout)
    now = now_in(cfg.bridge)
    change = next_change(cfg.bridge, now)
    return {
        "bridge": bridge,
        "running": bool(bridge and bridge.get("alive")),
        "backlog": outbox.backlog(),
        "remote": cfg.bridge.remote,
        "bucket": cfg.bridge.s3.bucket,
        "windows": [
            {"start": w.start, "end": w.end, "bandwidth": w.bandwidth_bytes_per_s}
            for w in cfg.bridge.windows
        ],
        "uploads_allowed": upload_allowed(cfg.bridge, now),
        "next_change": change.isoformat(timespec="minutes") if change else None,
        "errors": _errors(bridge or {}),
        "litestream": litestream_rows(bridge or {}),
        "telemetry": (bridge or {}).get("telemetry") or {},
        "uploader": (bridge or {}).get("uploader") or {},
    }


@dataclass
class PassReport:
    """The last "sync now" pass: when, whether it still runs, and what it did."""

    started_at: float
    finished_at: float | None = None
    message: str = "running"


class SyncNow:
    """Runs one uploader pass at a time in a background thread."""

    def __init__(self, cfg: FieldboxConfig, layout: Layout) -> None:
        self.cfg = cfg
        self.layout = layout
        self.last: PassReport | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """True while a pass is in progress."""
        return self.last is not None and self.last.finished_at is None

    def start(self) -> str:
        """Start a pass unless one runs; return what the page should say."""
        with self._lock:
            if self.running:
                return "a sync pass is already running"
            self.last = PassReport(time.time())
        threading.Thread(target=self._run, args=(self.last,), daemon=True).start()
        return "sync pass started"

    def _run(self, report: PassReport) -> None:
        try:
            report.message = self._pass()
        except Exception as exc:  # shown on the page and logged; the api goes on
            report.message = f"sync pass failed: {type(exc).__name__}: {exc}"
            structlog.get_logger("fieldbox.admin").warning("sync_now_failed", error=repr(exc))
        report.finished_at = time.time()

    def _pass(self) -> str:
        from bridge.throttle import Throttle
        from bridge.uploader import Uploader
        from store.locations import Locations

        cfg = self.cfg
        locs = Locations(self.layout, cfg.store)
        outbox = Outbox(str(self.layout.outbox_db), cfg.store)
        try:
            if not cfg.bridge.remote:
                left = outbox.backlog().items
                return f"no remote ([bridge.s3] bucket is not set): {left} items wait in the outbox"
            outbox.retry_all_now()
            throttle = Throttle(cfg.bridge.upload.bandwidth_bytes_per_s)
            uploader = Uploader(cfg.bridge, self.layout, locs, outbox, throttle)
            result = asyncio.run(uploader.drain_once())
            after = outbox.backlog()
            text = (
                f"uploaded {result.uploaded}, {result.already_there} already in S3, "
                f"{result.failed} failed; {after.items} items left"
            )
            return text + (f" (error: {result.error})" if result.error else "")
        finally:
            outbox.close()
            locs.close()
