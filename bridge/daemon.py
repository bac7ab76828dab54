"""`fieldbox serve bridge`: the parts of the bridge started in order, stopped in reverse.

Start-up order: stores, the remote check, Litestream, the uploader, telemetry shipping,
the drop folder, the scheduler, the status writer. Every part's loop stops on one event;
shutdown waits for each in reverse order, so a multipart upload in flight is left
resumable and Litestream gets its SIGTERM last (after the last write it must ship).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from bridge.config import BridgeConfig
from bridge.s3 import CredentialsError, open_client
from store.config import StoreConfig
from store.db import read_json, replace_file
from store.locations import Locations
from store.outbox import Outbox
from store.paths import Layout

_STATUS_EVERY_S = 2.0
_REMOTE_RECHECK_S = 60.0


def status_path(layout: Layout) -> Path:
    """Where the bridge leaves its status for the api's /health and the CLI."""
    return layout.bridge_status


def read_status(layout: Layout, stale_after_s: float = 30.0) -> dict[str, Any] | None:
    """The bridge's last status, with `alive` false when it stopped writing; None if never run."""
    data = read_json(status_path(layout))
    if data is None:
        return None
    data["alive"] = time.time() - float(data.get("updated_at", 0)) < stale_after_s
    return data


def _write_status(layout: Layout, status: dict[str, Any]) -> None:
    body = json.dumps({**status, "updated_at": time.time()}, default=str)
    replace_file(status_path(layout), body)


def now_in(cfg: BridgeConfig) -> datetime:
    """The current time in the bridge's configured time zone (local when unset)."""
    return datetime.now(ZoneInfo(cfg.timezone)) if cfg.timezone else datetime.now().astimezone()


async def check_remote(cfg: BridgeConfig) -> str:
    """ "ok", "no remote", or a readable reason the S3 target cannot be used."""
    if not cfg.remote:
        return "no remote: [bridge.s3] bucket is not set; the outbox keeps everything"
    try:
        async with open_client(cfg.s3) as client:
            await client.head_bucket(Bucket=cfg.s3.bucket)
        return "ok"
    except CredentialsError as exc:
        return f"bad credentials: {exc}"
    except Exception as exc:
        return f"S3 target unusable ({cfg.s3.endpoint_url or 'AWS'}, bucket {cfg.s3.bucket}): " + (
            _readable(exc)
        )


def _readable(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        code = err.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if str(code) in ("404", "NoSuchBucket"):
            return "the bucket does not exist"
        if str(code) in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied ({code}): check the credentials"
        return f"{code}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


class Bridge:
    """One bridge process: its stores, its parts and their tasks."""

    def __init__(self, cfg: BridgeConfig, store: StoreConfig, layout: Layout) -> None:
        from bridge.dropfolder import DropFolder
        from bridge.litestream import Replicator
        from bridge.telemetry_ship import TelemetryShipper
        from bridge.throttle import Throttle
        from bridge.uploader import Uploader
        from bridge.windows import bandwidth_now

        self.cfg = cfg
        self.layout = layout
        self.log = structlog.get_logger("fieldbox.bridge")
        layout.ensure()
        self.locs = Locations(layout, store)
        self.outbox = Outbox(str(layout.outbox_db), store)
        self.started_at = time.time()
        self.remote = "not checked yet"
        self.throttle = Throttle(bandwidth_now(cfg, now_in(cfg)))
        self.replicator = Replicator(cfg, store, layout, self.locs)
        self.uploader = Uploader(cfg, layout, self.locs, self.outbox, self.throttle)
        self.telemetry = TelemetryShipper(cfg, layout)
        self.drop = (
            DropFolder(cfg, layout, self.locs, self.outbox) if cfg.drop_folder.path else None
        )

    def upload_allowed(self) -> bool:
        """True while blob uploads may run (inside a sync window, or no windows set)."""
        from bridge.windows import upload_allowed

        return upload_allowed(self.cfg, now_in(self.cfg))

    def window_changed(self) -> None:
        """A window opened or closed: apply its bandwidth cap."""
        from bridge.windows import bandwidth_now

        rate = bandwidth_now(self.cfg, now_in(self.cfg))
        self.throttle.set_rate(rate)
        self.log.info("sync_window_changed", allowed=self.upload_allowed(), bandwidth=rate)

    def status(self) -> dict[str, Any]:
        """Everything /health and `fieldbox sync status` show about the bridge."""
        from bridge.restore import last_drill

        backlog = self.outbox.backlog()
        remote, check = self.remote, self.uploader.server_check
        if remote == "ok" and check is not None and check.missing:
            # Reachable, but not a server the bridge may upload to (bridge/s3probe.py).
            remote = "S3 server lacks what the bridge needs: " + "; ".join(check.missing)
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "remote": remote,
            "uploads_allowed": self.upload_allowed(),
            "outbox": {
                "items": backlog.items,
                "bytes": backlog.bytes,
                "oldest_created_at": backlog.oldest_created_at,
                "last_success_at": backlog.last_success_at,
                "last_error": backlog.last_error,
            },
            "uploader": self.uploader.status(),
            "litestream": self.replicator.status(),
            "telemetry": self.telemetry.status(),
            "drop_folder": self.drop.status() if self.drop else None,
            "drill": last_drill(self.layout),
        }

    async def _remote_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            result = await check_remote(self.cfg)
            if result != self.remote:
                level = "info" if result == "ok" else "warning"
                getattr(self.log, level)("bridge_remote", status=result)
            self.remote = result
            await _wait(stop, _REMOTE_RECHECK_S if result == "ok" else 10.0)

    async def _status_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                status = await asyncio.to_thread(self.status)
                await asyncio.to_thread(_write_status, self.layout, status)
            except Exception as exc:  # a status hiccup must not stop the bridge
                self.log.warning("bridge_status_failed", error=str(exc))
            await _wait(stop, _STATUS_EVERY_S)

    async def run(self, stop: asyncio.Event, started: Callable[[], object] | None = None) -> None:
        """Run every part until `stop` is set; then stop them in reverse order and close.

        `started` is called once every part runs (the CLI sends sd_notify's READY=1 there).
        """
        from bridge.restore import drill
        from bridge.schedule import NightlyJobs, build_scheduler

        self.log.info("bridge_starting", remote=self.cfg.remote, bucket=self.cfg.s3.bucket)
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("remote", lambda: self._remote_loop(stop)),
            ("litestream", lambda: self.replicator.run(stop)),
            ("uploader", lambda: self.uploader.run(stop, self.upload_allowed)),
            ("telemetry", lambda: self.telemetry.run(stop, lambda: open_client(self.cfg.s3))),
        ]
        if self.drop is not None:
            drop = self.drop
            parts.append(("drop_folder", lambda: drop.run(stop)))
        parts.append(("status", lambda: self._status_loop(stop)))
        tasks = [
            (name, asyncio.create_task(self._supervise(name, factory, stop), name=name))
            for name, factory in parts
        ]
        scheduler = build_scheduler(
            self.cfg,
            NightlyJobs(
                prune_outbox=lambda: self.outbox.prune_done(7 * 86400),
                expire_uploads=self._expire_uploads,
                enforce_spool_cap=self.telemetry.enforce_cap,
                drill=lambda: drill(self.cfg, self.layout, self.locs),
                window_changed=self.window_changed,
            ),
        )
        scheduler.start()
        self.log.info("bridge_started", parts=[n for n, _ in parts])
        if started is not None:
            started()
        await stop.wait()
        scheduler.shutdown(wait=False)
        for name, task in reversed(tasks):
            try:
                await asyncio.wait_for(task, timeout=30)
            except TimeoutError:
                task.cancel()
                self.log.warning("bridge_part_slow_to_stop", part=name)
            except Exception as exc:
                self.log.error("bridge_part_failed", part=name, error=str(exc))
        self.outbox.close()
        self.locs.close()
        status_path(self.layout).unlink(missing_ok=True)
        self.log.info("bridge_stopped")

    async def _supervise(
        self, name: str, factory: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        # A part that crashes is logged and restarted; it never takes the others down.
        while not stop.is_set():
            try:
                await factory()
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.log.error("bridge_part_crashed", part=name, error=error)
                await _wait(stop, 5.0)

    def _expire_uploads(self) -> int:
        from store.uploads import Uploads

        uploads = Uploads(self.layout, self.locs.cfg)
        try:
            return uploads.expire()
        finally:
            uploads.close()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
