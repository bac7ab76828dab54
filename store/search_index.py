"""The ask index of one location: text chunks with FTS5 (bm25) and embedding vectors.

Every chunk names the record it came from (a document, an asset, a track of a scene-facts
asset) and carries a heading that says where it sits (`project > collection > key`, the
project markdown's sections), so a chunk read alone still says what it is about.

A document's write queues it in `search_pending` in the same transaction (one small row:
chunking and FTS5 in the write itself cost ten times the compare-and-swap, under the one
writer lock), and the api indexes what is queued right after, in batches, and before any
ask of that location; an asset is indexed in the write that creates it (rarer, and a
scene-facts asset's tracks come with it). Either way a crash never loses an index entry.
Vectors come later still: a chunk's `embedding` is NULL until the api embeds it (the
pending set is `WHERE embedding IS NULL`), float32 and L2-normalised. Searching is
`store.retrieval`'s.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from store.db import Database

# Appended to LOCATION_MIGRATIONS (store/locations.py). No triggers: `migrate` splits a
# script on ';'. The backfill queues what a location held before the index existed.
MIGRATION = """
CREATE TABLE search_chunks (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, ref TEXT NOT NULL, part INTEGER NOT NULL,
    collection TEXT, key TEXT, asset_id TEXT, track_id INTEGER, t REAL, frame INTEGER,
    project TEXT, heading TEXT NOT NULL, body TEXT NOT NULL, embedding BLOB,
    UNIQUE (source, ref, part)
);
CREATE INDEX search_chunks_unembedded ON search_chunks (id) WHERE embedding IS NULL;
CREATE VIRTUAL TABLE search_fts USING fts5(
    heading, body, tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TABLE search_pending (
    source TEXT NOT NULL, ref TEXT NOT NULL, PRIMARY KEY (source, ref)
) WITHOUT ROWID;
INSERT INTO search_pending (source, ref) SELECT 'doc', collection || '/' || key FROM documents;
INSERT INTO search_pending (source, ref) SELECT 'asset', id FROM assets
"""

SCENE_FACTS_KIND = "scene_facts"
CHUNK_CHARS = 700
"""A chunk's body is cut near this many characters, at a line break where there is one."""

COLUMNS = "id, source, ref, collection, key, asset_id, track_id, t, frame, project, heading, body"


class Passage(msgspec.Struct, frozen=True, kw_only=True):
    """One indexed chunk, as retrieval hands it back."""

    id: int
    source: str  # "doc", "asset" or "track"
    ref: str
    collection: str | None = None
    key: str | None = None
    asset_id: str | None = None
    track_id: int | None = None
    t: float | None = None
    frame: int | None = None
    project: str | None = None
    heading: str
    body: str


def passage_of(row: tuple[Any, ...]) -> Passage:
    """A `Passage` from a row of `COLUMNS`."""
    return Passage(
        id=row[0],
        source=row[1],
        ref=row[2],
        collection=row[3],
        key=row[4],
        asset_id=row[5],
        track_id=row[6],
        t=row[7],
        frame=row[8],
        project=row[9],
        heading=row[10],
        body=row[11],
    )


# --- what a record reads as -----------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> Iterator[str]:
    """`field: value` lines of a JSON value, nested fields dotted (`owner.phone: …`)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            yield f"{prefix}: {', '.join(_scalar(v) for v in value)}" if prefix else ""
        else:
            for v in value:
                yield from flatten(v, prefix)
    else:
        yield f"{prefix}: {_scalar(value)}" if prefix else _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def split(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """`text` in pieces of about `size` characters, cut at line breaks, then at spaces."""
    pieces: list[str] = []
    current = ""
    for line in text.splitlines():
        while len(line) > size:
            cut = line.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            head, line = line[:cut], line[cut:].lstrip()
            if current:
                pieces.append(current)
                current = ""
            pieces.append(head)
        if current and len(current) + 1 + len(line) > size:
            pieces.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current.strip():
        pieces.append(current)
    return [p for p in pieces if p.strip()] or [""]


def _insert(conn: sqlite3.Connection, rows: Iterable[dict[str, Any]]) -> None:
    for part, row in enumerate(rows):
        cur = conn.execute(
            "INSERT INTO search_chunks (source, ref, part, collection, key, asset_id, track_id,"
            " t, frame, project, heading, body, embedding)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["source"],
                row["ref"],
                part,
                row.get("collection"),
                row.get("key"),
                row.get("asset_id"),
                row.get("track_id"),
                row.get("t"),
                row.get("frame"),
                row.get("project"),
                row["heading"],
                row["body"],
                row.get("embedding"),
            ),
        )
        conn.execute(
            "INSERT INTO search_fts (rowid, heading, body) VALUES (?, ?, ?)",
            (cur.lastrowid, row["heading"], row["body"]),
        )


def _remove(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> None:
    conn.execute(
        f"DELETE FROM search_fts WHERE rowid IN (SELECT id FROM search_chunks WHERE {where})", args
    )
    conn.execute(f"DELETE FROM search_chunks WHERE {where}", args)


# --- keeping it current (called inside the record's own write transaction) ------------


def index_document(
    conn: sqlite3.Connection, collection: str, key: str, body: bytes, project: str | None
) -> None:
    """(Re)index one document: its chunks replace the ones it had.

    A chunk whose text did not change keeps its vector (embedding is the costly part, and
    it runs on the cores the models use); a document whose chunks all stayed is left as is.
    """
    ref = f"{collection}/{key}"
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        value = body.decode("utf-8", "replace")
    heading = " > ".join(p for p in (project, collection, key) if p)
    pieces = split("\n".join(line for line in flatten(value) if line))
    old = conn.execute(
        "SELECT heading, body, embedding, project FROM search_chunks "
        "WHERE source = 'doc' AND ref = ? ORDER BY part",
        (ref,),
    ).fetchall()
    if [(h, b, p) for h, b, _, p in old] == [(heading, piece, project) for piece in pieces]:
        conn.execute("DELETE FROM search_pending WHERE source = 'doc' AND ref = ?", (ref,))
        return
    vectors = {(h, b): e for h, b, e, _ in old if e is not None}
    unindex_document(conn, collection, key)
    base = {"source": "doc", "ref": ref, "collection": collection, "key": key}
    rows = (
        {
            **base,
            "project": project,
            "heading": heading,
            "body": piece,
            "embedding": vectors.get((heading, piece)),
        }
        for piece in pieces
    )
    _insert(conn, rows)


def queue_document(conn: sqlite3.Connection, collection: str, key: str) -> None:
    """Queue a document to (re)index, inside its own write; `catch_up` indexes it."""
    conn.execute(
        "INSERT OR IGNORE INTO search_pending (source, ref) VALUES ('doc', ?)",
        (f"{collection}/{key}",),
    )


def unindex_document(conn: sqlite3.Connection, collection: str, key: str) -> None:
    """Drop a document's chunks (it was deleted, or is about to be reindexed)."""
    _remove(conn, "source = 'doc' AND ref = ?", (f"{collection}/{key}",))
    conn.execute(
        "DELETE FROM search_pending WHERE source = 'doc' AND ref = ?", (f"{collection}/{key}",)
    )


def index_asset(
    conn: sqlite3.Connection,
    asset_id: str,
    *,
    kind: str,
    filename: str,
    project: str | None,
    metadata: dict[str, Any],
    facts: dict[str, Any] | None = None,
) -> None:
    """(Re)index one asset: what it is and what the crew said of it; for a scene-facts
    asset (`facts` given) also one chunk per track: its label, frames and times."""
    _remove(conn, "asset_id = ?", (asset_id,))
    conn.execute("DELETE FROM search_pending WHERE source = 'asset' AND ref = ?", (asset_id,))
    # Ids say nothing a question asks about, and their digits match numbers by chance.
    told = {k: v for k, v in metadata.items() if not (k == "id" or k.endswith("_id"))}
    lines = [f"file: {filename}", f"kind: {kind}", *flatten(told)]
    heading = " > ".join(p for p in (project, "assets", filename) if p)
    base = {"asset_id": asset_id, "project": project}
    _insert(
        conn,
        (
            {**base, "source": "asset", "ref": asset_id, "heading": heading, "body": piece}
            for piece in split("\n".join(line for line in lines if line))
        ),
    )
    if facts is None:
        return
    source = conn.execute(
        "SELECT filename FROM assets WHERE id = ?", (str(metadata.get("source_asset_id")),)
    ).fetchone()
    video = source[0] if source else filename
    for track in facts.get("tracks") or []:
        row = track_chunk(asset_id, project, str(video), facts, track)
        if row is not None:
            _insert(conn, [row])


def track_chunk(
    asset_id: str, project: str | None, video: str, facts: dict[str, Any], track: dict[str, Any]
) -> dict[str, Any] | None:
    """The chunk of one track: `label seen in frames a-b, from t1 s to t2 s, in video`."""
    frames = [f for f in track.get("frames") or [] if isinstance(f, dict)]
    if not frames or not isinstance(track.get("id"), int):
        return None
    times = (facts.get("video") or {}).get("frame_times") or []

    def time_of(obs: dict[str, Any]) -> float | None:
        t = obs.get("t")
        if isinstance(t, int | float):
            return float(t)
        i = obs.get("frame")
        return float(times[i]) if isinstance(i, int) and 0 <= i < len(times) else None

    first, last = frames[0], frames[-1]
    t0, t1 = time_of(first), time_of(last)
    label = str(track.get("label") or "object")
    when = f"from {t0:.1f} s to {t1:.1f} s" if t0 is not None and t1 is not None else ""
    body = "\n".join(
        x
        for x in (
            f"{label} (track {track['id']}) seen in video {video}",
            f"frames {first.get('frame')} to {last.get('frame')}, {len(frames)} observations",
            when and f"visible {when} of the video",
            f"first seen at bbox {first.get('bbox')}",
        )
        if x
    )
    return {
        "source": "track",
        "ref": f"{asset_id}#{track['id']}",
        "asset_id": asset_id,
        "track_id": track["id"],
        "t": t0,
        "frame": first.get("frame"),
        "project": project,
        "heading": " > ".join(p for p in (project, "scene facts", video, label) if p),
        "body": body,
    }


def read_facts(path: Path) -> dict[str, Any] | None:
    """A scene-facts file's JSON object, or None when it is not one."""
    try:
        value = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    return value if isinstance(value, dict) else None


def unindex_asset(conn: sqlite3.Connection, asset_id: str) -> None:
    """Drop an asset's chunks, its tracks' included."""
    _remove(conn, "asset_id = ?", (asset_id,))


# --- the pending set: records to index, chunks to embed ---------------------------------


def pending(db: Database, limit: int = 100) -> list[tuple[str, str]]:
    """(source, ref) of records still to index (from before the index, or a rebuild)."""
    rows = db.read().execute("SELECT source, ref FROM search_pending LIMIT ?", (limit,))
    return [(str(r[0]), str(r[1])) for r in rows.fetchall()]


def unembedded(db: Database, limit: int = 32) -> list[tuple[int, str]]:
    """(chunk id, text to embed) of chunks that have no vector yet."""
    rows = db.read().execute(
        "SELECT id, heading, body FROM search_chunks WHERE embedding IS NULL ORDER BY id LIMIT ?",
        (limit,),
    )
    return [(int(r[0]), f"{r[1]}\n{r[2]}") for r in rows.fetchall()]


def set_embeddings(db: Database, vectors: dict[int, list[float]]) -> int:
    """Store vectors (normalised here) for chunks that still exist; return how many."""
    done = 0
    with db.write(durable=False) as conn:  # recomputable: a power loss costs a re-embed
        for chunk_id, vector in vectors.items():
            v = np.asarray(vector, dtype=np.float32)
            norm = float(np.linalg.norm(v))
            blob = (v / norm if norm else v).astype("<f4").tobytes()
            cur = conn.execute(
                "UPDATE search_chunks SET embedding = ? WHERE id = ?", (blob, chunk_id)
            )
            done += cur.rowcount
    return done


def counts(db: Database) -> dict[str, int]:
    """Chunks, chunks without a vector, records still to index."""
    conn = db.read()
    total, bare = conn.execute(
        "SELECT count(*), count(*) - count(embedding) FROM search_chunks"
    ).fetchone()
    waiting = conn.execute("SELECT count(*) FROM search_pending").fetchone()[0]
    return {"chunks": int(total), "unembedded": int(bare), "pending": int(waiting)}


def clear(conn: sqlite3.Connection) -> None:
    """Empty the index and queue every document and asset again (inside a write)."""
    conn.execute("DELETE FROM search_fts")
    conn.execute("DELETE FROM search_chunks")
    conn.execute("DELETE FROM search_pending")
    conn.execute(
        "INSERT INTO search_pending (source, ref) "
        "SELECT 'doc', collection || '/' || key FROM documents"
    )
    conn.execute("INSERT INTO search_pending (source, ref) SELECT 'asset', id FROM assets")


def catch_up(
    db: Database, facts_of: Callable[[str], dict[str, Any] | None], batch: int = 32
) -> int:
    """Index every queued record, `batch` to a write; return how many.

    `facts_of(asset_id)` reads a scene-facts asset's JSON (None when it cannot). Each
    record is read inside the write that indexes it, so a write racing this one is either
    seen or queued again. The index is derived: its writes skip the fsync (a power loss
    leaves the records queued).
    """
    done = 0
    while rows := pending(db, batch):
        with db.write(durable=False) as conn:
            for source, ref in rows:
                if source == "doc":
                    _index_queued_document(conn, ref)
                else:
                    _index_queued_asset(conn, ref, facts_of)
        done += len(rows)
    return done


def _index_queued_document(conn: sqlite3.Connection, ref: str) -> None:
    collection, _, key = ref.partition("/")
    row = conn.execute(
        "SELECT body, project FROM documents WHERE collection = ? AND key = ?", (collection, key)
    ).fetchone()
    if row is None:
        unindex_document(conn, collection, key)
    else:
        index_document(conn, collection, key, bytes(row[0]), row[1])


def _index_queued_asset(
    conn: sqlite3.Connection, ref: str, facts_of: Callable[[str], dict[str, Any] | None]
) -> None:
    row = conn.execute(
        "SELECT kind, filename, project, metadata FROM assets WHERE id = ?", (ref,)
    ).fetchone()
    conn.execute("DELETE FROM search_pending WHERE source = 'asset' AND ref = ?", (ref,))
    if row is None:
        unindex_asset(conn, ref)
        return
    meta = json.loads(row[3] or "{}")
    index_asset(
        conn,
        ref,
        kind=row[0],
        filename=row[1],
        project=row[2],
        metadata=meta,
        facts=facts_of(ref) if row[0] == SCENE_FACTS_KIND else None,
    )
