"""Retrieval from a location's ask index (`store.search_index`): bm25 over FTS5, cosine over
the chunks' vectors, and reciprocal rank fusion of the two.

Vectors are compared by a brute-force dot product in numpy: a location holds thousands of
chunks, not millions, and this interpreter's sqlite3 cannot load extensions such as
sqlite-vec (docs/ask.md).
"""

from __future__ import annotations

import re

import numpy as np

from store.db import Database
from store.search_index import COLUMNS, Passage, passage_of

_WORD = re.compile(r"\w+", re.UNICODE)

STOP_WORDS = frozenset(
    """a an and are as at be by can did do does for from had has have how i in is it its of on
    or that the their there this to was we were what when where which who why will with you
    our us me my any about last time tell please show find did get got been so if then than
    should would could""".split()  # noqa: SIM905 (a word list reads better as text)
)


def terms(question: str) -> list[str]:
    """The words of a question worth matching (no stop words), lowercased, each once."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(question.lower()):
        if w not in STOP_WORDS and (len(w) > 1 or w.isdigit()):
            seen[w] = None
    return list(seen)


def _match(question: str) -> str:
    # Every term quoted: FTS5 syntax in a question (AND, NEAR, *, :) is only text here.
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in terms(question))


def search_text(db: Database, question: str, k: int = 20) -> list[tuple[Passage, float]]:
    """Chunks matching any of the question's terms, best bm25 first (score: higher better)."""
    match = _match(question)
    if not match:
        return []
    cols = ", ".join(f"c.{c.strip()}" for c in COLUMNS.split(","))
    rows = (
        db.read()
        .execute(
            f"SELECT {cols}, bm25(search_fts, 2.0, 1.0) AS score FROM search_fts "
            "JOIN search_chunks c ON c.id = search_fts.rowid "
            "WHERE search_fts MATCH ? ORDER BY score LIMIT ?",
            (match, k),
        )
        .fetchall()
    )
    return [(passage_of(r[:-1]), -float(r[-1])) for r in rows]


def matching(db: Database, question: str, ids: list[int]) -> set[int]:
    """Those of the chunks `ids` that hold a word of the question (stemmed as the index is)."""
    match = _match(question)
    if not match or not ids:
        return set()
    marks = ", ".join("?" * len(ids))
    rows = db.read().execute(
        f"SELECT rowid FROM search_fts WHERE search_fts MATCH ? AND rowid IN ({marks})",
        (match, *ids),
    )
    return {int(r[0]) for r in rows.fetchall()}


def nearest(
    db: Database, query: list[float], k: int = 20
) -> tuple[list[tuple[Passage, float]], list[float]]:
    """The `k` chunks whose vectors lie nearest `query` (cosine), nearest first, and the
    cosine of `query` to every embedded chunk (for its spread)."""
    rows = (
        db.read()
        .execute("SELECT id, embedding FROM search_chunks WHERE embedding IS NOT NULL")
        .fetchall()
    )
    if not rows:
        return [], []
    q = np.asarray(query, dtype=np.float32)
    q /= float(np.linalg.norm(q)) or 1.0
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
    if matrix.shape[1] != q.shape[0]:
        return [], []  # vectors of another model: `fieldbox index rebuild` replaces them
    scores = matrix @ q
    best = np.argsort(-scores)[:k]
    by_id = {p.id: p for p in passages(db, [int(ids[i]) for i in best])}
    top = [(by_id[int(ids[i])], float(scores[i])) for i in best if int(ids[i]) in by_id]
    return top, scores.tolist()


def passages(db: Database, ids: list[int]) -> list[Passage]:
    """The chunks with these ids (in no particular order)."""
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    rows = db.read().execute(f"SELECT {COLUMNS} FROM search_chunks WHERE id IN ({marks})", ids)
    return [passage_of(r) for r in rows.fetchall()]


def fuse(*ranked: list[tuple[Passage, float]], k: int = 60) -> list[tuple[Passage, float]]:
    """Reciprocal rank fusion of ranked lists: sum of 1 / (k + rank) per list a chunk is in."""
    scores: dict[int, float] = {}
    by_id: dict[int, Passage] = {}
    for results in ranked:
        for rank, (p, _) in enumerate(results, start=1):
            scores[p.id] = scores.get(p.id, 0.0) + 1.0 / (k + rank)
            by_id[p.id] = p
    order = sorted(scores, key=lambda i: -scores[i])
    return [(by_id[i], scores[i]) for i in order]
