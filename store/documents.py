"""JSON documents in collections with compare-and-swap writes (ETag preconditions)."""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

import msgspec

from store.db import Database, Operation
from store.errors import InvalidDocument, NotFound, PreconditionFailed
from store.paths import check_key


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """One stored document: the exact bytes the client sent, plus its ETag."""

    collection: str
    key: str
    body: bytes
    etag: str
    project: str | None
    created_at: float
    updated_at: float


def new_etag() -> str:
    """A fresh strong ETag; random, so a deleted-then-recreated document never reuses one."""
    return f'"{secrets.token_hex(10)}"'


def parse_body(body: bytes, max_bytes: int) -> Any:
    """Check that `body` is one JSON value within the size limit; return it decoded."""
    if len(body) > max_bytes:
        raise InvalidDocument(f"document is {len(body)} bytes; the limit is {max_bytes}")
    if not body.strip():
        raise InvalidDocument("document body is empty; send a JSON value")
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidDocument(f"document is not valid JSON: {exc}") from exc


def _project_of(value: Any) -> str | None:
    if isinstance(value, dict):
        for field in ("project", "projectId"):
            candidate = value.get(field)
            if isinstance(candidate, str) and candidate:
                return candidate
    return None


def etag_matches(current: str, header: str) -> bool:
    """Strong comparison of `current` against an If-Match value ('*' or a list of ETags)."""
    if header.strip() == "*":
        return True
    return any(tag.strip() == current for tag in header.split(","))


_COLUMNS = "collection, key, body, etag, project, created_at, updated_at"


def _row(row: tuple[Any, ...]) -> Document:
    return Document(
        collection=row[0],
        key=row[1],
        body=bytes(row[2]),
        etag=row[3],
        project=row[4],
        created_at=row[5],
        updated_at=row[6],
    )


def get(db: Database, collection: str, key: str) -> Document:
    """The document at (collection, key), or NotFound."""
    check_key("collection", collection)
    check_key("key", key)
    row = (
        db.read()
        .execute(
            f"SELECT {_COLUMNS} FROM documents WHERE collection = ? AND key = ?", (collection, key)
        )
        .fetchone()
    )
    if row is None:
        raise NotFound(f"document {collection}/{key} not found")
    return _row(row)


def put(
    db: Database,
    collection: str,
    key: str,
    body: bytes,
    *,
    if_match: str | None = None,
    if_none_match: bool = False,
    max_bytes: int = 1 << 20,
) -> tuple[Document, bool]:
    """Create (`if_none_match`) or update (`if_match`) a document; return it and `created`."""
    op = put_op(
        collection, key, body, if_match=if_match, if_none_match=if_none_match, max_bytes=max_bytes
    )
    return db.run(op)


def put_op(
    collection: str,
    key: str,
    body: bytes,
    *,
    if_match: str | None = None,
    if_none_match: bool = False,
    max_bytes: int = 1 << 20,
) -> Operation[tuple[Document, bool]]:
    """Check the input now; return the compare-and-swap to run under the write lock.

    Submit it with `Database.submit` (async callers) or run it with `Database.run`.
    """
    check_key("collection", collection)
    check_key("key", key)
    if if_match is None and not if_none_match:
        raise ValueError("put needs if_match or if_none_match")
    project = _project_of(parse_body(body, max_bytes))
    etag = new_etag()

    def compare_and_swap(conn: sqlite3.Connection) -> tuple[Document, bool]:
        now = time.time()
        row = conn.execute(
            "SELECT etag, created_at FROM documents WHERE collection = ? AND key = ?",
            (collection, key),
        ).fetchone()
        if if_none_match:
            if row is not None:
                raise PreconditionFailed(f"document {collection}/{key} already exists")
            created_at = now
        else:
            if row is None:
                raise PreconditionFailed(f"document {collection}/{key} does not exist")
            if not etag_matches(row[0], if_match or ""):
                raise PreconditionFailed(
                    f"document {collection}/{key} has changed (ETag {row[0]}, not {if_match})"
                )
            created_at = row[1]
        conn.execute(
            f"INSERT OR REPLACE INTO documents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (collection, key, body, etag, project, created_at, now),
        )
        doc = Document(
            collection=collection,
            key=key,
            body=body,
            etag=etag,
            project=project,
            created_at=created_at,
            updated_at=now,
        )
        return doc, row is None

    return compare_and_swap


def delete(db: Database, collection: str, key: str, *, if_match: str) -> None:
    """Delete a document if its ETag still matches `if_match` ('*' matches any)."""
    db.run(delete_op(collection, key, if_match=if_match))


def delete_op(collection: str, key: str, *, if_match: str) -> Operation[None]:
    """Check the input now; return the conditional delete to run under the write lock."""
    check_key("collection", collection)
    check_key("key", key)

    def conditional_delete(conn: sqlite3.Connection) -> None:
        row = conn.execute(
            "SELECT etag FROM documents WHERE collection = ? AND key = ?", (collection, key)
        ).fetchone()
        if row is None:
            raise NotFound(f"document {collection}/{key} not found")
        if not etag_matches(row[0], if_match):
            raise PreconditionFailed(
                f"document {collection}/{key} has changed (ETag {row[0]}, not {if_match})"
            )
        conn.execute("DELETE FROM documents WHERE collection = ? AND key = ?", (collection, key))

    return conditional_delete


def list_page(db: Database, collection: str, *, after: str | None, limit: int) -> list[Document]:
    """Up to `limit` documents of a collection in key order, starting after key `after`."""
    check_key("collection", collection)
    rows = (
        db.read()
        .execute(
            f"SELECT {_COLUMNS} FROM documents "
            "WHERE collection = ? AND key > ? ORDER BY key LIMIT ?",
            (collection, after or "", limit),
        )
        .fetchall()
    )
    return [_row(r) for r in rows]


def for_project(db: Database, project: str) -> list[Document]:
    """Every document whose body names `project` (field `project` or `projectId`)."""
    rows = (
        db.read()
        .execute(
            f"SELECT {_COLUMNS} FROM documents WHERE project = ? ORDER BY collection, key",
            (project,),
        )
        .fetchall()
    )
    return [_row(r) for r in rows]
