"""The ask index: chunks follow every document and asset write in the same transaction."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from store import assets, documents, retrieval, search_index
from store.assets import Asset
from store.config import StoreConfig
from store.db import Database
from store.locations import LOCATION_MIGRATIONS


def _refs(results: list[tuple[search_index.Passage, float]]) -> list[str]:
    return [p.ref for p, _ in results]


def _indexed(db: Database) -> int:
    """Index what the writes queued (the api does this right after each write)."""
    return search_index.catch_up(db, lambda _: None)


def test_a_written_document_is_queued_then_found_by_its_words(db: Database) -> None:
    """A put queues the document in its own transaction; once indexed a search finds it,
    heading and key included."""
    body = {
        "project": "roof-2026",
        "title": "North slope",
        "text": "Cracked shingles by the chimney",
    }
    documents.put(db, "notes", "roof-1", json.dumps(body).encode(), if_none_match=True)
    documents.put(db, "notes", "yard", b'{"text": "Fence leans west"}', if_none_match=True)
    assert search_index.pending(db) == [("doc", "notes/roof-1"), ("doc", "notes/yard")]
    assert retrieval.search_text(db, "shingle") == []
    assert _indexed(db) == 2
    assert search_index.pending(db) == []
    found = retrieval.search_text(db, "what about the shingle cracks?")
    assert _refs(found) == ["notes/roof-1"]
    passage = found[0][0]
    assert (passage.collection, passage.key, passage.project) == ("notes", "roof-1", "roof-2026")
    assert passage.heading == "roof-2026 > notes > roof-1"
    assert "text: Cracked shingles by the chimney" in passage.body


def test_an_update_replaces_the_chunks_and_a_delete_removes_them(db: Database) -> None:
    """Old words stop matching after an update; nothing of a deleted document is left."""
    doc, _ = documents.put(db, "notes", "n", b'{"text": "water heater leaks"}', if_none_match=True)
    _indexed(db)
    doc, _ = documents.put(db, "notes", "n", b'{"text": "furnace filter dirty"}', if_match=doc.etag)
    _indexed(db)
    assert retrieval.search_text(db, "leaks") == []
    assert _refs(retrieval.search_text(db, "furnace")) == ["notes/n"]
    documents.delete(db, "notes", "n", if_match=doc.etag)
    _indexed(db)
    assert retrieval.search_text(db, "furnace") == []
    assert search_index.counts(db)["chunks"] == 0
    assert db.read().execute("SELECT count(*) FROM search_fts").fetchone()[0] == 0


def test_a_refused_write_leaves_the_index_as_it_was(db: Database) -> None:
    """A stale ETag changes neither the document nor its chunks (one transaction)."""
    documents.put(db, "notes", "n", b'{"text": "sump pump ok"}', if_none_match=True)
    _indexed(db)
    with pytest.raises(Exception, match="changed"):
        documents.put(db, "notes", "n", b'{"text": "attic mold"}', if_match='"stale"')
    assert search_index.pending(db) == []
    _indexed(db)
    assert retrieval.search_text(db, "mold") == []
    assert _refs(retrieval.search_text(db, "sump")) == ["notes/n"]


def test_fts_syntax_in_a_question_is_only_text(db: Database) -> None:
    """Quotes, NEAR, AND, * and column filters in a question neither fail nor filter."""
    documents.put(db, "notes", "n", b'{"text": "roof near the chimney"}', if_none_match=True)
    _indexed(db)
    for question in ['"roof', "roof AND NEAR(chimney", "heading: roof*", "-roof OR"]:
        assert _refs(retrieval.search_text(db, question)) == ["notes/n"], question


def test_scene_facts_tracks_are_chunks_with_their_times(db: Database) -> None:
    """A scene-facts asset indexes its metadata and one chunk per track (label, t, frame)."""
    facts = {
        "video": {"frame_count": 10, "fps": 2.0, "width": 64, "height": 48},
        "tracks": [
            {
                "id": 3,
                "label": "water heater",
                "frames": [
                    {"frame": 4, "t": 2.0, "bbox": [1, 2, 3, 4]},
                    {"frame": 6, "t": 3.0, "bbox": [1, 2, 3, 4]},
                ],
            },
            {"id": 4, "label": "ladder", "frames": [{"frame": 1, "t": 0.5, "bbox": [0, 0, 1, 1]}]},
        ],
    }
    asset = Asset(
        id="loc1.0000000000000000abcd",
        location="loc1",
        project="p",
        kind=search_index.SCENE_FACTS_KIND,
        filename="walk.scene_facts.json",
        mime_type="application/json",
        size=1,
        sha256="0" * 64,
        created_at=1.0,
        metadata={"job_id": "j1"},
    )
    assets.create(db, asset, facts)
    found = retrieval.search_text(db, "where is the water heater")
    track = next(p for p, _ in found if p.source == "track")
    assert (track.asset_id, track.track_id, track.t, track.frame) == (asset.id, 3, 2.0, 4)
    assert "from 2.0 s to 3.0 s" in track.body
    assert search_index.counts(db) == {"chunks": 3, "unembedded": 3, "pending": 0}


def test_vectors_rank_by_cosine_and_fuse_with_text(db: Database) -> None:
    """Stored vectors are normalised and ranked by cosine; RRF puts a chunk both lists
    rank first ahead of chunks only one list has."""
    for key, text in [("a", "gutter clogged"), ("b", "gutter fine"), ("c", "porch light")]:
        documents.put(db, "notes", key, json.dumps({"text": text}).encode(), if_none_match=True)
    _indexed(db)
    ids = {
        key: cid
        for cid, text in search_index.unembedded(db)
        for key in "abc"
        if f"> {key}\n" in text
    }
    search_index.set_embeddings(
        db, {ids["a"]: [3.0, 0.0], ids["b"]: [1.0, 1.0], ids["c"]: [0.0, 5.0]}
    )
    assert search_index.unembedded(db) == []
    near = retrieval.nearest(db, [1.0, 0.1])[0]
    assert [p.key for p, _ in near] == ["a", "b", "c"]
    assert near[0][1] == pytest.approx(0.995, abs=1e-3)
    fused = retrieval.fuse(retrieval.search_text(db, "gutter"), near)
    assert fused[0][0].key == "a"
    assert fused[-1][0].key == "c"


def test_an_older_location_is_backfilled_through_the_pending_set(tmp_path: Path) -> None:
    """A location made before the index: migrating queues its records; catch_up indexes them."""
    path = tmp_path / "location.db"
    old = Database(path, StoreConfig(), LOCATION_MIGRATIONS[:1])
    with old.write() as conn:
        conn.execute(
            "INSERT INTO documents VALUES ('notes', 'k', ?, '\"e\"', NULL, 1, 1)",
            (b'{"text": "radon test passed"}',),
        )
    old.close()
    db = Database(path, StoreConfig(), LOCATION_MIGRATIONS)
    try:
        assert search_index.counts(db)["pending"] == 1
        assert retrieval.search_text(db, "radon") == []
        assert search_index.catch_up(db, lambda _: None) == 1
        assert _refs(retrieval.search_text(db, "radon")) == ["notes/k"]
        assert search_index.counts(db)["pending"] == 0
    finally:
        db.close()


def test_split_keeps_pieces_near_the_size_and_loses_no_word() -> None:
    """Long text is cut at line breaks or spaces, every word kept in order."""
    text = "\n".join(f"line {i} " + "word " * 30 for i in range(20))
    pieces = search_index.split(text, size=200)
    assert all(len(p) <= 200 for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())


def test_the_index_tables_exist_only_through_the_migration(tmp_path: Path) -> None:
    """The shipped first migration is untouched: the index is migration 2."""
    conn = sqlite3.connect(":memory:")
    for statement in LOCATION_MIGRATIONS[0].split(";"):
        conn.execute(statement)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "search_chunks" not in names
    assert LOCATION_MIGRATIONS[1] == search_index.MIGRATION


def test_a_rewrite_keeps_the_vectors_of_unchanged_text(db: Database) -> None:
    """Rewriting a document with the same text leaves its chunk and vector alone; new text
    gets a new chunk with no vector (to be embedded)."""
    doc, _ = documents.put(db, "notes", "n", b'{"text": "sump pump ok"}', if_none_match=True)
    _indexed(db)
    ((cid, _),) = search_index.unembedded(db)
    search_index.set_embeddings(db, {cid: [1.0, 0.0]})
    doc, _ = documents.put(db, "notes", "n", b'{"text": "sump pump ok"}', if_match=doc.etag)
    _indexed(db)
    assert search_index.unembedded(db) == []
    assert [p.id for p, _ in retrieval.nearest(db, [1.0, 0.0])[0]] == [cid]
    documents.put(db, "notes", "n", b'{"text": "sump pump failed"}', if_match=doc.etag)
    _indexed(db)
    assert [text.split("\n")[-1] for _, text in search_index.unembedded(db)] == [
        "text: sump pump failed"
    ]
