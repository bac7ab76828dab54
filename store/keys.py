"""API keys: stored as sha256 of the secret, shown once, scoped, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from typing import Any

import msgspec

from store.db import Database
from store.errors import InvalidName, NotFound

SCOPES = ("field", "gateway", "admin")

KEY_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL
    )
    """,
)


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key's public record (never the secret)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None


def parse_scopes(text: str) -> tuple[str, ...]:
    """Comma-separated scopes → a checked tuple."""
    scopes = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InvalidName(f"scopes must be a comma list of {', '.join(SCOPES)}; got {text!r}")
    return scopes


def _digest(secret: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _row(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        scopes=tuple(row[2].split(",")),
        created_at=row[3],
        revoked_at=row[4],
    )


def create(db: Database, name: str, scopes: tuple[str, ...]) -> tuple[ApiKey, str]:
    """Create a key; return its record and the token (`fbx_{id}_{secret}`), shown only now."""
    if not name or len(name) > 200:
        raise InvalidName("key name must be 1-200 characters")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    with db.write() as conn:
        conn.execute(
            "INSERT INTO keys (id, name, scopes, secret_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
            (key_id, name, ",".join(scopes), _digest(secret), now),
        )
    return ApiKey(id=key_id, name=name, scopes=scopes, created_at=now, revoked_at=None), (
        f"fbx_{key_id}_{secret}"
    )


def verify(db: Database, token: str) -> ApiKey | None:
    """The live key a bearer token belongs to, or None."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "fbx" or not key_id or not secret or len(token) > 200:
        return None
    row = (
        db.read()
        .execute(
            "SELECT id, name, scopes, created_at, revoked_at, secret_sha256 FROM keys WHERE id = ?",
            (key_id,),
        )
        .fetchone()
    )
    if row is None or row[4] is not None:
        return None
    if not hmac.compare_digest(row[5], _digest(secret)):
        return None
    return _row(row[:5])


class Verifier:
    """`verify` with a memo that is dropped whenever keys.db changes (any process, any write).

    `PRAGMA data_version` moves when another connection commits, so a revocation made by
    the CLI or another process takes effect on the very next request. The number is only
    meaningful for the connection that read it, and each thread reads through its own
    connection, so each thread keeps its own memo beside the version its connection gave.
    """

    def __init__(self, db: Database, max_entries: int = 4096) -> None:
        self.db = db
        self.max_entries = max_entries
        self._local = threading.local()

    def verify(self, token: str) -> ApiKey | None:
        """The live key behind `token`, or None."""
        version = int(self.db.read().execute("PRAGMA data_version").fetchone()[0])
        memo: dict[str, ApiKey | None] | None = getattr(self._local, "memo", None)
        if memo is None or self._local.version != version:
            memo = self._local.memo = {}
            self._local.version = version
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest in memo:
            return memo[digest]
        key = verify(self.db, token)
        if len(memo) >= self.max_entries:
            memo.clear()
        memo[digest] = key
        return key


def list_all(db: Database) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    rows = (
        db.read()
        .execute("SELECT id, name, scopes, created_at, revoked_at FROM keys ORDER BY created_at")
        .fetchall()
    )
    return [_row(r) for r in rows]


def revoke(db: Database, key_id: str) -> None:
    """Revoke a key at once; NotFound if there is no such live key."""
    with db.write() as conn:
        cur = conn.execute(
            "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time.time(), key_id),
        )
        if cur.rowcount != 1:
            raise NotFound(f"no live key {key_id!r}")


def open_keys(path: str, cfg: Any) -> Database:
    """Open (and migrate) keys.db."""
    return Database(path, cfg, KEY_MIGRATIONS)
