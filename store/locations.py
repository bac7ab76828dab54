"""Locations: one folder and one SQLite database each; the filesystem is the registry."""

from __future__ import annotations

import fcntl
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from store import search_index
from store.config import StoreConfig
from store.db import Database, connect, fsync_dir, is_disk_full, makedirs_durable, migrate
from store.errors import Conflict, DiskFull, InvalidName, NotFound
from store.paths import Layout, check_id

# Numbered migrations of location.db; append only, never edit a shipped one.
LOCATION_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        id TEXT PRIMARY KEY, account TEXT NOT NULL, geo_prefix TEXT NOT NULL,
        name TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE documents (
        collection TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, etag TEXT NOT NULL,
        project TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (collection, key)
    ) WITHOUT ROWID;
    CREATE INDEX documents_project ON documents (project, collection, key);
    CREATE TABLE assets (
        id TEXT PRIMARY KEY, project TEXT, kind TEXT NOT NULL, filename TEXT NOT NULL,
        mime_type TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
        created_at REAL NOT NULL, metadata TEXT NOT NULL DEFAULT '{}', upload_id TEXT UNIQUE
    );
    CREATE INDEX assets_newest ON assets (created_at DESC, id DESC);
    CREATE INDEX assets_sha ON assets (sha256, created_at DESC);
    CREATE INDEX assets_project ON assets (project, created_at DESC)
    """,
    search_index.MIGRATION,
)


class Location(msgspec.Struct, frozen=True, kw_only=True):
    """A place the crews inspect; owns one database and one blob folder."""

    id: str
    account: str
    geo_prefix: str
    name: str
    created_at: float = 0.0

    def validate(self) -> Location:
        """Check every path-forming field; return self."""
        check_id("location id", self.id)
        check_id("account", self.account)
        check_id("geo_prefix", self.geo_prefix)
        if not self.name or len(self.name) > 500:
            raise InvalidName("name must be 1-500 characters")
        return self


class Locations:
    """Creates, finds and opens location databases under one data root."""

    def __init__(self, layout: Layout, cfg: StoreConfig) -> None:
        self.layout = layout
        self.cfg = cfg
        self._cache: dict[str, Location] = {}
        self._dbs: dict[str, Database] = {}
        self._lock = threading.Lock()

    @contextmanager
    def _create_lock(self) -> Iterator[None]:
        # Serialises creation across processes, so one id never lands in two places.
        self.layout.locations_dir.mkdir(parents=True, exist_ok=True)
        with open(self.layout.locations_create_lock, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _scan(self) -> Iterator[tuple[str, str, str]]:
        root = self.layout.locations_dir
        if not root.is_dir():
            return
        for account in sorted(root.iterdir()):
            if not account.is_dir() or account.name.startswith("."):
                continue
            for geo in sorted(account.iterdir()):
                if not geo.is_dir() or geo.name.startswith("."):
                    continue
                for loc in sorted(geo.iterdir()):
                    if not loc.name.startswith(".") and (loc / "location.db").is_file():
                        yield account.name, geo.name, loc.name

    def create(self, loc: Location) -> Location:
        """Create a location atomically: it is visible only once its database is complete."""
        loc.validate()
        loc = msgspec.structs.replace(loc, created_at=time.time())
        with self._create_lock():
            for _, _, existing in self._scan():
                if existing.lower() == loc.id.lower():
                    raise Conflict(f"location {existing!r} already exists")
            parent = self.layout.location_dir(loc.account, loc.geo_prefix, loc.id).parent
            tmp = parent / f".tmp-{loc.id}-{secrets.token_hex(4)}"
            try:
                makedirs_durable(tmp)
                conn = connect(tmp / "location.db", self.cfg)
                try:
                    migrate(conn, LOCATION_MIGRATIONS)
                    conn.execute(
                        "INSERT INTO meta (id, account, geo_prefix, name, created_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (loc.id, loc.account, loc.geo_prefix, loc.name, loc.created_at),
                    )
                finally:
                    conn.close()  # checkpoints and removes the WAL before the rename
                fsync_dir(tmp)
                tmp.rename(parent / loc.id)
                fsync_dir(parent)
            except (OSError, sqlite3.Error) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if is_disk_full(exc):
                    raise DiskFull("no space left on the data disk; location not created") from exc
                raise
        with self._lock:
            self._cache[loc.id] = loc
        return loc

    def _read_meta(self, account: str, geo: str, loc_id: str) -> Location:
        db = self._open(account, geo, loc_id)
        row = (
            db.read()
            .execute("SELECT id, account, geo_prefix, name, created_at FROM meta")
            .fetchone()
        )
        return Location(
            id=row[0], account=row[1], geo_prefix=row[2], name=row[3], created_at=row[4]
        )

    def _open(self, account: str, geo: str, loc_id: str) -> Database:
        with self._lock:
            db = self._dbs.get(loc_id)
            if db is None:
                path = self.layout.location_db(account, geo, loc_id)
                db = Database(path, self.cfg, LOCATION_MIGRATIONS)
                self._dbs[loc_id] = db
            return db

    def get(self, loc_id: str) -> Location:
        """The location with this id, or NotFound."""
        check_id("location id", loc_id)
        with self._lock:
            cached = self._cache.get(loc_id)
        if cached is not None:
            return cached
        for account, geo, found in self._scan():
            if found == loc_id:
                loc = self._read_meta(account, geo, found)
                with self._lock:
                    self._cache[loc_id] = loc
                return loc
        raise NotFound(f"location {loc_id!r} not found")

    def list(self) -> list[Location]:
        """Every location on the box, sorted by id."""
        found: list[Location] = []
        for account, geo, loc_id in self._scan():
            with self._lock:
                cached = self._cache.get(loc_id)
            if cached is None:
                cached = self._read_meta(account, geo, loc_id)
                with self._lock:
                    self._cache[loc_id] = cached
            found.append(cached)
        return sorted(found, key=lambda loc: loc.id)

    def db(self, loc_id: str) -> Database:
        """The open database of a location (opened once per process)."""
        loc = self.get(loc_id)
        return self._open(loc.account, loc.geo_prefix, loc.id)

    def close(self) -> None:
        """Close every open location database."""
        with self._lock:
            dbs = list(self._dbs.values())
            self._dbs.clear()
        for db in dbs:
            db.close()
