"""Litestream replica lag after a burst of writes, as the bridge runs it, on a moto server.

    .venv/bin/python bench/bench_litestream.py [--bursts N] [--rows N]

The bridge's Replicator runs the real `litestream replicate` on one location DB with the
default `sync_interval_s` (1 s). Each burst commits `--rows` transactions (one row each,
through the store's own connection settings), then the clock runs from the last commit
until S3 holds an LTX file at least as new as the newest one Litestream wrote locally
after that commit: that is the replica lag. The baseline beside it is the sync interval
itself (what Litestream waits before it even looks). `bench_bridge.py` prints these rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.litestream import Replicator, ltx_dir, ltx_max_txid
from store.db import connect
from store.locations import Location, Locations
from store.paths import Layout
from tests.bridge.s3server import MotoServer, s3_env, s3_toml
from tests.conftest import make_config

BUCKET = "bench-litestream"
TARGET_S = 2.0
Row = tuple[str, str, str, bool]


def _replica_max(client: Any, prefix: str) -> int:
    best = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            best = max(best, ltx_max_txid(obj["Key"]))
    return best


def _newest_local(db: Path, since: float) -> int:
    best = 0
    for entry in os.scandir(ltx_dir(db)):
        if entry.name.endswith(".ltx") and entry.stat().st_mtime >= since:
            best = max(best, ltx_max_txid(entry.name))
    return best


def measure(bursts: int, rows: int) -> tuple[list[float], float]:
    """Lag of each burst in seconds, and the sync interval used."""
    os.environ.update(s3_env())
    tmp = Path(tempfile.mkdtemp(prefix="bench-litestream-"))
    server = MotoServer(tmp).start()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    try:
        s3: Any = server.client()
        s3.create_bucket(Bucket=BUCKET)
        cfg = make_config(tmp / "data", s3_toml(server.url, BUCKET))
        layout = Layout(cfg.data_dir)
        layout.ensure()
        locs = Locations(layout, cfg.store)
        locs.create(Location(id="site1", account="acme", geo_prefix="u4pr", name="bench"))
        db = layout.location_db("acme", "u4pr", "site1")
        replicator = Replicator(cfg.bridge, cfg.store, layout, locs)
        ready = threading.Event()

        def run() -> None:
            async def go() -> None:
                nonlocal stop, loop
                stop, loop = asyncio.Event(), asyncio.get_running_loop()
                ready.set()
                await replicator.run(stop)

            asyncio.run(go())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        ready.wait(10)
        conn = connect(db, cfg.store)
        conn.execute("CREATE TABLE readings (n INTEGER PRIMARY KEY, v TEXT)")
        prefix = "fieldbox/acme/u4pr/site1/db/0000/"
        time.sleep(3)  # Litestream's first snapshot
        lags: list[float] = []
        n = 0
        for _ in range(bursts):
            for _ in range(rows):
                conn.execute("INSERT INTO readings (n, v) VALUES (?, ?)", (n, os.urandom(64).hex()))
                n += 1
            last_commit = time.time()
            while True:
                local = _newest_local(db, last_commit)
                if local and _replica_max(s3, prefix) >= local:
                    lags.append(time.time() - last_commit)
                    break
                if time.time() - last_commit > 60:
                    lags.append(float("inf"))
                    break
                time.sleep(0.05)
            time.sleep(1.5)
        conn.close()
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        locs.close()
        return lags, cfg.bridge.litestream.sync_interval_s
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def lag_rows(bursts: int = 5, rows: int = 500) -> list[Row]:
    """(measure, value, target, ok) rows for the bridge bench's table."""
    lags, interval = measure(bursts, rows)
    median, worst = statistics.median(lags), max(lags)
    return [
        (f"Litestream lag after {rows} commits, median", f"{median:.2f} s", f"{TARGET_S} s",
         median <= TARGET_S),
        (f"Litestream lag, worst of {bursts} bursts", f"{worst:.2f} s", f"{TARGET_S} s",
         worst <= TARGET_S),
        ("baseline: Litestream sync_interval", f"{interval:.2f} s", "-", True),
        ("lag / sync_interval (median)", f"{median / interval:.2f}x", "-", True),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Measure and print the lag table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--rows", type=int, default=500)
    args = parser.parse_args(argv)
    print(f"\n{'measure':44} {'value':>10} {'target':>10}  verdict")
    for name, value, target, ok in lag_rows(args.bursts, args.rows):
        print(f"{name:44} {value:>10} {target:>10}  {'PASS' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
