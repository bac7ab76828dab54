"""Bringing a database back from its Litestream replica, and the nightly restore drill.

`restore_target` runs `litestream restore` into a temporary file beside the target,
checks that it opens and passes `PRAGMA integrity_check`, and only then moves it into
place, so a failed restore never leaves a half-written database where one is expected.

The drill restores every replicated database into a temporary folder, checks integrity,
and compares a checksum of every table's rows with the live database. A database that
is written while the drill runs may be a few transactions ahead of its replica; the
drill then waits for replication and compares again before it calls that a mismatch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.config import BridgeConfig
from bridge.litestream import Target, binary, environment, replica_yaml, targets
from bridge.s3 import location_key
from store.db import read_json, replace_file
from store.locations import Locations
from store.paths import Layout, check_id


class RestoreError(Exception):
    """A restore that could not be done; the message says why."""


@dataclass
class Restored:
    """What a restore produced."""

    path: str
    integrity: str
    tables: dict[str, int]
    seconds: float


def _run_restore(cfg: BridgeConfig, target: Target, out: Path, timestamp: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="fieldbox-restore-") as tmp:
        conf = Path(tmp) / "litestream.yml"
        conf.write_text(
            f"dbs:\n  - path: {json.dumps(str(target.path))}\n" + replica_yaml(cfg, target)
        )
        cmd = [binary(cfg), "restore", "-no-expand-env", "-config", str(conf), "-o", str(out)]
        if timestamp:
            cmd += ["-timestamp", timestamp]
        cmd.append(str(target.path))
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=600, env=environment(cfg)
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RestoreError(f"litestream restore could not run: {exc}") from exc
    if done.returncode != 0 or not out.exists():
        detail = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise RestoreError(f"no replica of {target.name} could be restored: {detail[-1]}")


def check_database(path: Path) -> tuple[str, dict[str, tuple[int, str]]]:
    """(`PRAGMA integrity_check` verdict, `table_checksums`) of a database file, read-only."""
    with contextlib.closing(_open_read_only(path)) as conn:
        verdict = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        return verdict, table_checksums(conn)


def _open_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def table_checksums(conn: sqlite3.Connection) -> dict[str, tuple[int, str]]:
    """(row count, sha256 of every row in a fixed order) for each table of the application.

    Litestream's own bookkeeping tables (`_litestream_seq`, `_litestream_lock`) are left
    out: they change under it, not under us."""
    out: dict[str, tuple[int, str]] = {}
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE '\\_litestream\\_%' ESCAPE '\\' ORDER BY name"
        )
    ]
    for name in names:
        digest = hashlib.sha256()
        count = 0
        quoted = '"' + name.replace('"', '""') + '"'
        # ORDER BY every column: the same rows give the same digest in any physical order.
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({quoted})")]
        order = ", ".join(str(i + 1) for i in range(len(cols))) or "1"
        for row in conn.execute(f"SELECT * FROM {quoted} ORDER BY {order}"):
            digest.update(repr(row).encode())
            count += 1
        out[name] = (count, digest.hexdigest())
    return out


def restore_target(
    cfg: BridgeConfig, target: Target, to: Path, timestamp: str | None = None, force: bool = False
) -> Restored:
    """Restore one replicated database to `to`, checked before it is moved into place."""
    if not cfg.remote:
        raise RestoreError("no remote: [bridge.s3] bucket is not set")
    if to.exists() and not force:
        raise RestoreError(f"{to} exists; pass another --to path (or --force to replace it)")
    if timestamp is not None:
        timestamp = rfc3339(timestamp)
    to.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = to.with_name(f".{to.name}.restoring")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    try:
        _run_restore(cfg, target, tmp, timestamp)
        verdict, checksums = check_database(tmp)
        if verdict != "ok":
            raise RestoreError(f"the restored database fails its integrity check: {verdict}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        for side in ("-wal", "-shm"):
            Path(f"{to}{side}").unlink(missing_ok=True)
        os.replace(tmp, to)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
    tables = {name: rows for name, (rows, _) in checksums.items()}
    return Restored(str(to), verdict, tables, round(time.monotonic() - started, 3))


def rfc3339(text: str) -> str:
    """A point in time as Litestream takes it (RFC 3339 in UTC); it must name its zone."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise RestoreError(
            f"--timestamp {text!r} is not an RFC 3339 time with a zone "
            "(for example 2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00)"
        )
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def location_target(
    cfg: BridgeConfig,
    layout: Layout,
    locs: Locations,
    location: str,
    account: str | None = None,
    geo_prefix: str | None = None,
) -> Target:
    """Where a location's DB lives and where its replica is: from the box, or as given."""
    check_id("location id", location)
    if account is None or geo_prefix is None:
        try:
            loc = locs.get(location)
        except Exception as exc:
            raise RestoreError(
                f"location {location!r} is not on this box: give --account and --geo-prefix"
            ) from exc
        account, geo_prefix = loc.account, loc.geo_prefix
    check_id("account", account)
    check_id("geo_prefix", geo_prefix)
    return Target(
        f"location:{location}",
        layout.location_db(account, geo_prefix, location),
        location_key(cfg.s3, account, geo_prefix, location, "db"),
    )


def drill_path(layout: Layout) -> Path:
    """Where the last drill's verdict is kept."""
    return layout.drill_verdict


def last_drill(layout: Layout) -> dict[str, Any] | None:
    """The last restore drill's verdict, or None if none ran on this box."""
    return read_json(drill_path(layout))


def _compare(cfg: BridgeConfig, target: Target, folder: Path) -> dict[str, Any]:
    out = folder / (target.name.replace(":", "-") + ".db")
    restore_target(cfg, target, out, force=True)
    integrity, back = check_database(out)
    with contextlib.closing(_open_read_only(target.path)) as conn:
        live = table_checksums(conn)
    differ = sorted(t for t in set(live) | set(back) if live.get(t) != back.get(t))
    return {"integrity": integrity, "tables": len(live), "differ": differ}


def drill(cfg: BridgeConfig, layout: Layout, locs: Locations) -> dict[str, Any]:
    """Restore every replicated DB to a temp dir, check it, compare rows with the live DB."""
    started = time.time()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fieldbox-drill-", dir=layout.tmp_dir) as tmp:
        for target in targets(cfg, layout, locs):
            try:
                result = _compare(cfg, target, Path(tmp))
                if result["differ"]:  # the live DB may be a few commits ahead: wait, retry
                    time.sleep(max(3 * cfg.litestream.sync_interval_s, 2.0))
                    result = _compare(cfg, target, Path(tmp))
                result["ok"] = result["integrity"] == "ok" and not result["differ"]
            except (RestoreError, sqlite3.Error, OSError) as exc:
                result = {"ok": False, "error": str(exc)}
            results[target.name] = result
    verdict = {
        "at": started,
        "seconds": round(time.time() - started, 3),
        "ok": all(r["ok"] for r in results.values()),
        "databases": results,
    }
    replace_file(drill_path(layout), json.dumps(verdict))
    return verdict
