"""The resources one api process holds open, built from config and closed in reverse order."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zipfile import is_zipfile

from litestar.di import NamedDependency

from appliance import ask_index
from appliance.ask import Asker
from appliance.capture_jobs import enqueue_capture_jobs
from appliance.committer import AsyncCommitter
from appliance.config import FieldboxConfig
from appliance.gateway_calls import GatewayCalls
from appliance.observe import Metrics
from store import ingest, keys
from store.assets import Asset
from store.db import Database, Operation
from store.keys import Verifier
from store.locations import Locations
from store.outbox import Outbox
from store.paths import Layout
from store.queue import Queue
from store.uploads import Uploads

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking store work (fsync, hashing) off the event loop, with the log context."""
    # asyncio's hop costs about two thirds of anyio's (measured), and uploads hop per PATCH.
    return await asyncio.to_thread(fn, *args, **kwargs)


@dataclass
class Services:
    """Stores and helpers shared by the api's handlers."""

    cfg: FieldboxConfig
    layout: Layout
    locations: Locations
    uploads: Uploads
    keys: Database
    metrics: Metrics
    queue: Queue
    outbox: Outbox
    verifier: Verifier = field(init=False)
    # Set when the server begins a graceful shutdown, so long uploads stop and keep their bytes.
    stopping: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.time)
    # Running sha256 of uploads in flight (offset it covers, hasher), so a finished upload
    # need not be read again; lost on restart, when the file is hashed instead.
    upload_hashes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    committers: dict[str, AsyncCommitter] = field(default_factory=dict)
    # Set after a document write: the ask indexer indexes it now rather than on its next pass.
    index_wake: asyncio.Event = field(default_factory=asyncio.Event)
    gateway_calls: GatewayCalls = field(init=False)
    asker: Asker = field(init=False)

    def __post_init__(self) -> None:
        self.verifier = Verifier(self.keys)
        self.gateway_calls = GatewayCalls(self.cfg, self.layout, self.keys)
        ask = self.cfg.ask
        facts_of = ask_index.facts_reader(self.layout, self.locations)
        self.asker = Asker(self.gateway_calls, facts_of, ask.passages, ask.max_tokens, ask.alias)

    @classmethod
    def open(
        cls,
        cfg: FieldboxConfig,
        metrics: Metrics | None = None,
        stopping: threading.Event | None = None,
    ) -> Services:
        """Open every store under the data root and finish uploads a crash interrupted."""
        layout = Layout(cfg.data_dir)
        layout.ensure()
        locations = Locations(layout, cfg.store)
        uploads = Uploads(layout, cfg.store)
        key_db = keys.open_keys(str(layout.keys_db), cfg.store)
        queue = Queue(str(layout.queue_db), cfg.store, cfg.queue)
        outbox = Outbox(str(layout.outbox_db), cfg.store)
        svc = cls(cfg, layout, locations, uploads, key_db, metrics or Metrics(), queue, outbox)
        if stopping is not None:
            svc.stopping = stopping
        ingest.resume_all(layout, locations, uploads, outbox, on_created=svc.on_asset_created)
        return svc

    def on_asset_created(self, asset: Asset) -> None:
        """An upload became an asset: queue its capture jobs when configured (idempotent,
        and run before the upload is marked done, so a crash cannot skip it)."""
        if asset.kind == "capture" and self.cfg.worker.auto_enqueue_capture:
            _, blob = ingest.asset_file(self.layout, self.locations, asset.id)
            enqueue_capture_jobs(self.queue, asset.id, asset.location, photos=is_zipfile(blob))

    def free_disk_bytes(self) -> int:
        """Free bytes on the filesystem of the data root."""
        free = shutil.disk_usage(self.layout.root).free
        self.metrics.disk_free.set(free)
        return free

    def disk_low(self) -> bool:
        """True when free disk is under the configured floor."""
        return self.free_disk_bytes() < self.cfg.store.min_free_disk_mb * 1024 * 1024

    async def committed(self, db: Database, op: Operation[T]) -> T:
        """Run a write in the database's next group commit; return once it is on disk."""
        committer = self.committers.get(db.path)
        if committer is None:
            committer = self.committers[db.path] = AsyncCommitter(db.path, self.cfg.store)
        return await committer.run(op)

    def close(self) -> None:
        """Close in reverse order of opening."""
        for committer in self.committers.values():
            committer.close()
        self.outbox.close()
        self.queue.close()
        self.keys.close()
        self.uploads.close()
        self.locations.close()


# How handlers ask for the services: an explicit named dependency (Litestar 3 style).
Svc = NamedDependency[Services]
