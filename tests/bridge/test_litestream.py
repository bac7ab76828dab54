"""Litestream replication against a real S3 API (moto's server), with the real `litestream`
binary run by the bridge's Replicator: a location DB replicates and `fieldbox restore`
brings it back identical; the known failure modes (the app's own checkpoints racing
Litestream, a checkpoint while Litestream is down, a long-lived reader) lose nothing;
the restore drill reports its verdict."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.cli import main
from bridge.config import BridgeConfig
from bridge.litestream import Replicator, render_config, targets
from bridge.restore import (
    RestoreError,
    drill,
    last_drill,
    location_target,
    restore_target,
    table_checksums,
)
from bridge.throttle import Throttle
from bridge.uploader import Uploader
from store.blobs import blob_path
from store.db import connect
from store.ingest import add_file
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from store.queue import Queue
from store.queue_schema import QueueConfig
from tests.bridge.s3server import Bucket, s3_toml
from tests.conftest import make_config

pytest.importorskip("moto")


class Box:
    """A data root with one location, and a Replicator that can be started and stopped."""

    def __init__(self, tmp_path: Path, bucket: Bucket) -> None:
        self.toml = s3_toml(bucket.endpoint, bucket.name) + "[bridge.litestream]\n"
        self.toml += "sync_interval_s = 0.2\n"
        self.config_path = tmp_path / "fieldbox.toml"
        self.config_path.write_text(self.toml)
        full = make_config(tmp_path / "data", self.toml)
        self.cfg: BridgeConfig = full.bridge
        self.store = full.store
        self.data = full.data_dir
        self.layout = Layout(full.data_dir)
        self.layout.ensure()
        self.locs = Locations(self.layout, full.store)
        self.loc = self.locs.create(
            Location(id="site1", account="acme", geo_prefix="u4pr", name="12 Main St")
        )
        self.db_path = self.layout.location_db("acme", "u4pr", "site1")
        self.bucket = bucket
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.replicator = Replicator(self.cfg, full.store, self.layout, self.locs)

    def start(self) -> None:
        """Run the Replicator in a thread of its own (its own event loop)."""
        ready = threading.Event()

        def run() -> None:
            async def main_() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                ready.set()
                await self.replicator.run(self._stop)

            asyncio.run(main_())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        """Stop the Replicator (and so Litestream) and wait for it."""
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the replicator did not stop"
        self._thread = None

    def writer(self, **pragmas: int) -> sqlite3.Connection:
        """A connection to the location DB with the store's own pragmas (and overrides)."""
        conn = connect(self.db_path, self.store)
        conn.execute("CREATE TABLE IF NOT EXISTS readings (n INTEGER PRIMARY KEY, v TEXT)")
        for name, value in pragmas.items():
            conn.execute(f"PRAGMA {name} = {value}")
        return conn

    def live(self) -> dict[str, tuple[int, str]]:
        """Row checksums of every table of the live location DB."""
        conn = sqlite3.connect(self.db_path)
        try:
            return table_checksums(conn)
        finally:
            conn.close()

    def restored(self, out: Path) -> dict[str, tuple[int, str]]:
        """Restore the location's replica to `out` and return its row checksums."""
        target = location_target(self.cfg, self.layout, self.locs, "site1")

        restore_target(self.cfg, target, out, force=True)
        conn = sqlite3.connect(out)
        try:
            return table_checksums(conn)
        finally:
            conn.close()


@pytest.fixture
def box(tmp_path: Path, bucket: Bucket) -> Iterator[Box]:
    """A box with one location whose replicator is stopped at the end."""
    b = Box(tmp_path, bucket)
    yield b
    b.stop()
    b.locs.close()


def until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    error: RestoreError | None = None
    while True:
        try:
            value = check()
        except RestoreError as exc:
            value, error = None, exc

        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what} (last error: {error})"
        time.sleep(0.3)


def restored_equals_live(box: Box, out: Path, timeout: float = 60) -> dict[str, tuple[int, str]]:
    """Wait until a restore of the replica has exactly the live DB's rows; return them."""
    live = box.live()
    seen: list[dict[str, tuple[int, str]]] = []

    def same() -> bool:
        seen[:] = [box.restored(out)]
        return seen[0] == live

    try:
        until("the replica to match the live DB", same, timeout)
    except AssertionError as exc:
        differ = {
            t: (live.get(t), seen[0].get(t))
            for t in set(live) | set(seen[0] if seen else {})
            if not seen or live.get(t) != seen[0].get(t)
        }
        raise AssertionError(f"{exc}; live vs restored: {differ}") from None
    return live


def write_rows(conn: sqlite3.Connection, start: int, count: int, checkpoint_every: int = 0) -> None:
    """Insert `count` rows, one transaction each, with a TRUNCATE checkpoint every so often."""
    for n in range(start, start + count):
        conn.execute("INSERT INTO readings (n, v) VALUES (?, ?)", (n, f"value-{n}" * 20))
        if checkpoint_every and n % checkpoint_every == 0:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_config_lists_every_location_and_the_box_databases(box: Box) -> None:
    """The generated litestream.yml names each DB and its replica path under the prefix."""
    Path(box.layout.queue_db).touch()
    text = render_config(box.cfg, targets(box.cfg, box.layout, box.locs))
    assert f'path: "{box.db_path}"' in text
    assert 'path: "fieldbox/acme/u4pr/site1/db"' in text
    assert 'path: "fieldbox/box1/db/queue"' in text
    assert f'endpoint: "{box.bucket.endpoint}"' in text and "force-path-style: true" in text


def test_replicates_and_fieldbox_restore_brings_the_db_back(box: Box, tmp_path: Path) -> None:
    """Rows written while Litestream runs reach S3; `fieldbox restore --to` writes a DB with
    the same rows that passes its integrity check; an existing target is not overwritten;
    the lag in the status goes back to 0."""
    box.start()
    conn = box.writer()
    write_rows(conn, 0, 200)
    live = restored_equals_live(box, tmp_path / "probe.db")
    assert live["readings"][0] == 200

    def caught_up() -> bool:
        db = box.replicator.status()["databases"]["location:site1"]
        return bool(db["lag_s"] == 0 and db["replica_txid"] >= db["local_txid"] > 0)

    until("the status to show the replica caught up", caught_up)
    assert box.replicator.status()["state"] == "running"

    out = tmp_path / "restored" / "site1.db"
    runner = CliRunner()
    args = ["--config", str(box.config_path), "restore", "--location", "site1", "--to", str(out)]
    result = runner.invoke(main, args, env={"FIELDBOX_DATA": str(box.data)})
    assert result.exit_code == 0, result.output
    assert "integrity ok" in result.output
    check = sqlite3.connect(out)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert table_checksums(check) == live
    check.close()

    again = runner.invoke(main, args, env={"FIELDBOX_DATA": str(box.data)})
    assert again.exit_code != 0 and "exists" in again.output
    conn.close()


def test_restore_to_a_point_in_time(box: Box, tmp_path: Path) -> None:
    """`fieldbox restore --timestamp T` brings back the DB as it was at T: rows written
    after T are not in it; a time without a zone is refused with a clear message."""
    box.start()
    conn = box.writer()
    write_rows(conn, 0, 30)
    restored_equals_live(box, tmp_path / "a.db")
    time.sleep(1.2)  # LTX files carry whole-second-ish times: keep T well clear of both
    at = datetime.now(UTC)
    time.sleep(1.2)
    write_rows(conn, 1000, 40)
    assert restored_equals_live(box, tmp_path / "b.db")["readings"][0] == 70

    out = tmp_path / "then.db"
    args = ["--config", str(box.config_path), "restore", "--location", "site1", "--to", str(out)]
    env = {"FIELDBOX_DATA": str(box.data)}
    result = CliRunner().invoke(main, [*args, "--timestamp", at.isoformat()], env=env)
    assert result.exit_code == 0, result.output
    check = sqlite3.connect(out)
    assert check.execute("SELECT count(*), max(n) FROM readings").fetchone() == (30, 29)
    check.close()

    naive = at.replace(tzinfo=None).isoformat()
    bad = CliRunner().invoke(main, [*args, "--force", "--timestamp", naive], env=env)
    assert bad.exit_code != 0 and "RFC 3339" in bad.output
    conn.close()


def test_restore_all_brings_a_replaced_box_back(box: Box, tmp_path: Path) -> None:
    """On a new, empty box with the same S3 settings, `fieldbox restore --all` finds every
    location replica and the box's queue and outbox, and restores each into its place: the
    locations are back with the same rows. A second run skips what is there; an unrelated
    folder in the bucket is ignored."""
    box.locs.create(Location(id="site2", account="acme", geo_prefix="u4ps", name="Depot"))
    site2 = box.layout.location_db("acme", "u4ps", "site2")
    outbox = Outbox(str(box.layout.outbox_db), box.store)
    row = {"account": "acme", "geo_prefix": "u4pr", "location": "site1", "sha256": "0" * 64}
    outbox.add(asset_id="a1", size=1, kind="capture", filename="f.jpg", mime_type="image/jpeg",
               **row)  # fmt: skip
    queue = Queue(str(box.layout.queue_db), box.store, QueueConfig())
    box.bucket.client.put_object(Bucket=box.bucket.name, Key="fieldbox/notes/readme.txt", Body=b"x")
    box.start()
    conn = box.writer()
    write_rows(conn, 0, 25)
    other = connect(site2, box.store)
    other.execute("CREATE TABLE readings (n INTEGER PRIMARY KEY, v TEXT)")
    write_rows(other, 0, 7)
    names = ("location:site1", "location:site2", "queue", "outbox")

    def caught_up() -> bool:
        dbs = box.replicator.status()["databases"]
        return all(
            n in dbs and dbs[n]["lag_s"] == 0 and dbs[n]["replica_txid"] >= dbs[n]["local_txid"] > 0
            for n in names
        )

    until("every DB to be replicated", caught_up)
    live = {"site1": box.live(), "site2": table_checksums(sqlite3.connect(site2))}

    fresh = tmp_path / "new-box"
    args = ["--config", str(box.config_path), "restore", "--all"]
    env = {"FIELDBOX_DATA": str(fresh)}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert result.output.count("restored ") == 4, result.output
    layout = Layout(fresh)
    locs = Locations(layout, box.store)
    assert {loc.id: loc.geo_prefix for loc in locs.list()} == {"site1": "u4pr", "site2": "u4ps"}
    locs.close()
    for loc, geo in (("site1", "u4pr"), ("site2", "u4ps")):
        back = sqlite3.connect(layout.location_db("acme", geo, loc))
        assert table_checksums(back) == live[loc]
        back.close()
    assert [i.asset_id for i in Outbox(str(layout.outbox_db), box.store).pending()] == ["a1"]
    assert layout.queue_db.exists()

    again = CliRunner().invoke(main, args, env=env)
    assert again.exit_code == 0 and again.output.count("skipped ") == 4, again.output
    both = CliRunner().invoke(main, [*args, "--location", "site1"], env=env)
    assert both.exit_code != 0 and "either --location ID or --all" in both.output
    conn.close()
    other.close()
    queue.close()
    outbox.close()


def test_restore_all_blobs_copies_the_bytes_back(box: Box, tmp_path: Path) -> None:
    """`restore --all --blobs` also copies every asset's bytes back from S3, checked against
    the asset's SHA-256 and size; a blob that never reached S3 is named and makes the
    command fail, without stopping the others; a second run copies nothing twice."""
    outbox = Outbox(str(box.layout.outbox_db), box.store)
    src = tmp_path / "src"
    src.mkdir()
    datas = [os.urandom(100_000), os.urandom(3 * 1024 * 1024), b"never uploaded"]
    made = []
    for i, data in enumerate(datas):
        (src / f"f{i}.bin").write_bytes(data)
        made.append(add_file(box.layout, box.locs, outbox, "site1", src / f"f{i}.bin",
                             kind="capture", filename=f"f{i}.bin",
                             mime_type="application/octet-stream"))  # fmt: skip
        if i == 1:
            up = Uploader(box.cfg, box.layout, box.locs, outbox, Throttle(0))
            assert asyncio.run(up.drain_once()).uploaded == 2
    box.start()

    def caught_up() -> bool:
        db = box.replicator.status()["databases"].get("location:site1")
        return bool(db and db["lag_s"] == 0 and db["replica_txid"] >= db["local_txid"] > 0)

    until("the location to be replicated", caught_up)
    fresh = tmp_path / "new-box"
    args = ["--config", str(box.config_path), "restore", "--all", "--blobs"]
    env = {"FIELDBOX_DATA": str(fresh)}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code != 0, result.output
    assert "blobs: 2 copied back" in result.output and "1 not in S3" in result.output
    assert "fetching blobs" in result.output, "no progress shown while blobs download"
    assert made[2].sha256 in result.output, result.output
    layout = Layout(fresh)
    loc = Location(id="site1", account="acme", geo_prefix="u4pr", name="12 Main St")
    for asset, data in zip(made, datas, strict=True):
        path = blob_path(layout, loc, asset.sha256)
        assert (path.read_bytes() if path.exists() else None) == (
            None if data == b"never uploaded" else data
        )
    again = CliRunner().invoke(main, args, env=env)
    assert "blobs: 0 copied back (0 bytes), 2 already here, 1 not in S3" in again.output
    outbox.close()


def test_a_location_not_on_the_box_needs_its_account(box: Box, tmp_path: Path) -> None:
    """Restoring an unknown location without --account/--geo-prefix is a clear error."""
    result = CliRunner().invoke(
        main,
        [
            "--config",
            str(box.config_path),
            "restore",
            "--location",
            "gone",
            "--to",
            str(tmp_path / "x.db"),
        ],
        env={"FIELDBOX_DATA": str(box.data)},
    )
    assert result.exit_code != 0 and "--account" in result.output


def test_app_checkpoints_racing_litestream_lose_nothing(box: Box, tmp_path: Path) -> None:
    """The app checkpoints on its own (tiny autocheckpoint, and TRUNCATE every 25 commits)
    while Litestream replicates: the restore still has every row."""
    box.start()
    conn = box.writer(wal_autocheckpoint=4)
    writers = [threading.Thread(target=write_rows, args=(conn, i * 1000, 150, 25)) for i in (1,)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    live = restored_equals_live(box, tmp_path / "race.db")
    assert live["readings"][0] == 150
    conn.close()


def test_a_checkpoint_while_litestream_is_down_then_restore(box: Box, tmp_path: Path) -> None:
    """Litestream issue 752: rows written and checkpointed (WAL truncated) while Litestream
    is stopped are still in the replica after it restarts; so are rows written after."""
    box.start()
    conn = box.writer()
    write_rows(conn, 0, 50)
    restored_equals_live(box, tmp_path / "a.db")
    box.stop()
    write_rows(conn, 1000, 80)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.replicator = Replicator(box.cfg, box.store, box.layout, box.locs)
    box.start()
    write_rows(conn, 2000, 20)
    live = restored_equals_live(box, tmp_path / "b.db")
    assert live["readings"][0] == 150
    conn.close()


def test_a_long_lived_reader_does_not_stop_replication(box: Box, tmp_path: Path) -> None:
    """A reader holding a transaction open (so no checkpoint can finish) while writes go on:
    replication continues, and after the reader lets go everything is in the replica."""
    box.start()
    conn = box.writer()
    write_rows(conn, 0, 10)
    reader = sqlite3.connect(box.db_path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM readings").fetchone()[0] == 10
    write_rows(conn, 100, 300)
    live = restored_equals_live(box, tmp_path / "held.db")
    assert live["readings"][0] == 310
    reader.execute("COMMIT")
    reader.close()
    write_rows(conn, 1000, 10)
    assert restored_equals_live(box, tmp_path / "released.db")["readings"][0] == 320
    conn.close()


def test_the_drill_restores_and_compares_every_db(box: Box, tmp_path: Path) -> None:
    """The drill restores each replicated DB, checks it and compares rows; its verdict is
    kept for /health."""
    box.start()
    conn = box.writer()
    write_rows(conn, 0, 40)
    restored_equals_live(box, tmp_path / "pre.db")
    verdict = drill(box.cfg, box.layout, box.locs)
    assert verdict["ok"], verdict
    site = verdict["databases"]["location:site1"]
    assert site["integrity"] == "ok" and site["differ"] == [] and site["tables"] >= 2
    assert last_drill(box.layout) == verdict
    conn.close()
