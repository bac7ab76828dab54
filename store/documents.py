"""JSON documents in collections with compare-and-swap writes (ETag preconditions)."""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

import msgspec

from store import search_index
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
    except RecursionError as exc:
        raise InvalidDocument(f"document is JSON nested too deeply: {exc}") from None


def _project_of(value: Any) -> str | None:
    if isinstance(value, dict):
        for field in ("project", "projectId"):
            candidate = value.get(field)
            if isinstance(candidate, str) and candidate:
                return candidate
    return None


def _etag_list(header: str) -> list[str] | None:
    """The ETags an If-Match value names; None for '*' (any)."""
    if header.strip() == "*":
        return None
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _refusal(
    conn: sqlite3.Connection, collection: str, key: str, if_match: str, *, deleting: bool
) -> Exception:
    """Why a conditional write changed nothing: the document is gone, or its ETag moved."""
    row = conn.execute(
        "SELECT etag FROM documents WHERE collection = ? AND key = ?", (collection, key)
    ).fetchone()
    if row is None and deleting:
        return NotFound(f"document {collection}/{key} not found")
    if row is None:  # RFC 9110: If-Match on a missing resource fails the precondition
        return PreconditionFailed(f"document {collection}/{key} does not exist")
    return PreconditionFailed(
        f"document {collection}/{key} has changed (ETag {row[0]}, not {if_match})"
    )


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

    The api batches it (`appliance.committer`); other callers run it with `Database.run`.
    """
    check_key("collection", collection)
    check_key("key", key)
    if if_match is None and not if_none_match:
        raise ValueError("put needs if_match or if_none_match")
    project = _project_of(parse_body(body, max_bytes))
    etag = new_etag()

    def compare_and_swap(conn: sqlite3.Connection) -> tuple[Document, bool]:
        # One statement decides and writes; the explaining SELECT runs only on a refusal.
        now = time.time()
        if if_none_match:
            cur = conn.execute(
                f"INSERT INTO documents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (collection, key, body, etag, project, now, now),
            )
            if cur.rowcount != 1:
                raise PreconditionFailed(f"document {collection}/{key} already exists")
            created_at = now
        else:
            tags = _etag_list(if_match or "")
            where = "" if tags is None else f" AND etag IN ({', '.join('?' * len(tags))})"
            row = conn.execute(
                "UPDATE documents SET body = ?, etag = ?, project = ?, updated_at = ? "
                f"WHERE collection = ? AND key = ?{where} RETURNING created_at",
                (body, etag, project, now, collection, key, *(tags or ())),
            ).fetchone()
            if row is None:
                raise _refusal(conn, collection, key, if_match or "", deleting=False)
            created_at = row[0]
        search_index.queue_document(conn, collection, key)
        doc = Document(
            collection=collection,
            key=key,
            body=body,
            etag=etag,
            project=project,
            created_at=created_at,
            updated_at=now,
        )
        return doc, bool(if_none_match)

    return compare_and_swap


def delete(db: Database, collection: str, key: str, *, if_match: str) -> None:
    """Delete a document if its ETag still matches `if_match` ('*' matches any)."""
    db.run(delete_op(collection, key, if_match=if_match))


def delete_op(collection: str, key: str, *, if_match: str) -> Operation[None]:
    """Check the input now; return the conditional delete to run under the write lock."""
    check_key("collection", collection)
    check_key("key", key)

    def conditional_delete(conn: sqlite3.Connection) -> None:
        tags = _etag_list(if_match)
        where = "" if tags is None else f" AND etag IN ({', '.join('?' * len(tags))})"
        cur = conn.execute(
            f"DELETE FROM documents WHERE collection = ? AND key = ?{where}",
            (collection, key, *(tags or ())),
        )
        if cur.rowcount != 1:
            raise _refusal(conn, collection, key, if_match, deleting=True)
        search_index.queue_document(conn, collection, key)

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
