"""Opening databases: WAL, full sync, numbered migrations applied once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from store.config import StoreConfig
from store.db import Database, replace_file
from store.locations import LOCATION_MIGRATIONS


def test_location_db_is_wal_full_sync_and_migrated(tmp_path: Path) -> None:
    """A new location.db is in WAL mode, synchronous=FULL, at the newest migration."""
    db = Database(tmp_path / "location.db", StoreConfig(), LOCATION_MIGRATIONS)
    try:
        utils = db.utils
        assert utils.journal_mode == "wal"
        assert db.read().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert {"meta", "documents", "assets"} <= set(utils.table_names())
        assert utils.table("documents").pks == ["collection", "key"]
        assert utils.execute("PRAGMA user_version").fetchone()[0] == len(LOCATION_MIGRATIONS)
    finally:
        db.close()


def test_migrations_run_once_and_new_ones_apply(tmp_path: Path) -> None:
    """Reopening applies nothing twice; an appended migration runs on the next open."""
    path = tmp_path / "x.db"
    first = ("CREATE TABLE a (x INTEGER)",)
    Database(path, StoreConfig(), first).close()
    db = Database(path, StoreConfig(), (*first, "CREATE TABLE b (y INTEGER)"))
    try:
        assert set(db.utils.table_names()) == {"a", "b"}
        assert db.utils.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        db.close()


def test_in_memory_database_reads_what_it_wrote() -> None:
    """A ":memory:" database is one database: the migrated tables and a committed row are
    there through `read()`, from this thread and from another."""
    db = Database(":memory:", StoreConfig(), ("CREATE TABLE t (x INTEGER)",))
    try:
        with db.write() as conn:
            conn.execute("INSERT INTO t VALUES (42)")
        assert db.read().execute("SELECT x FROM t").fetchall() == [(42,)]
        with ThreadPoolExecutor(1) as pool:
            rows = pool.submit(lambda: db.read().execute("SELECT x FROM t").fetchall()).result()
        assert rows == [(42,)]
    finally:
        db.close()


def test_busy_timeout_is_at_least_five_seconds(tmp_path: Path) -> None:
    """Writers from other processes wait for the lock at least 5 s before giving up."""
    db = Database(tmp_path / "x.db", StoreConfig())
    try:
        assert db.read().execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    finally:
        db.close()


def test_replace_file_is_whole_or_untouched(tmp_path: Path) -> None:
    """The file holds the old bytes or the new ones, never a mix, and no temp file stays."""
    path = tmp_path / "new" / "status.json"
    replace_file(path, '{"n": 1}')
    replace_file(path, b'{"n": 2}', durable=True)
    assert path.read_text() == '{"n": 2}'

    with pytest.raises(TypeError):  # fails mid-write, after the temp file was opened
        replace_file(path, 12345)  # type: ignore[arg-type]
    assert path.read_text() == '{"n": 2}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["status.json"]
