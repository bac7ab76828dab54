"""Documents: exact bytes kept, ETag compare-and-swap, paging, project tagging."""

from __future__ import annotations

import pytest

from store import documents
from store.db import Database
from store.errors import InvalidDocument, InvalidName, NotFound, PreconditionFailed


def test_create_then_get_returns_exact_bytes_and_etag(db: Database) -> None:
    """A created document reads back byte for byte, with the ETag the write returned."""
    body = b'{ "z": 1,\n  "a" :[1 , 2],  "project":"p1" }  '
    doc, created = documents.put(db, "inspections", "roof", body, if_none_match=True)
    assert created is True
    assert doc.etag.startswith('"') and doc.etag.endswith('"') and len(doc.etag) > 2
    got = documents.get(db, "inspections", "roof")
    assert got.body == body
    assert got.etag == doc.etag
    assert got.project == "p1"


def test_create_over_existing_is_refused_and_changes_nothing(db: Database) -> None:
    """If-None-Match on an existing document fails and leaves the stored body alone."""
    first, _ = documents.put(db, "c", "k", b'{"v": 1}', if_none_match=True)
    with pytest.raises(PreconditionFailed):
        documents.put(db, "c", "k", b'{"v": 2}', if_none_match=True)
    got = documents.get(db, "c", "k")
    assert got.body == b'{"v": 1}'
    assert got.etag == first.etag


def test_update_with_current_etag_gives_new_etag_and_keeps_created_at(db: Database) -> None:
    """An If-Match update replaces the body, rotates the ETag and keeps the creation time."""
    first, _ = documents.put(db, "c", "k", b'{"v": 1}', if_none_match=True)
    second, created = documents.put(db, "c", "k", b'{"v": 2}', if_match=first.etag)
    assert created is False
    assert second.etag != first.etag
    got = documents.get(db, "c", "k")
    assert got.body == b'{"v": 2}'
    assert got.etag == second.etag
    assert got.created_at == first.created_at
    assert got.updated_at >= first.updated_at


def test_stale_etag_is_refused_and_body_unchanged(db: Database) -> None:
    """A write with an old ETag fails; the newer body survives."""
    first, _ = documents.put(db, "c", "k", b'{"v": 1}', if_none_match=True)
    second, _ = documents.put(db, "c", "k", b'{"v": 2}', if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        documents.put(db, "c", "k", b'{"v": 3}', if_match=first.etag)
    got = documents.get(db, "c", "k")
    assert got.body == b'{"v": 2}'
    assert got.etag == second.etag


def test_update_of_missing_document_is_refused(db: Database) -> None:
    """If-Match on a document that does not exist fails and creates nothing."""
    with pytest.raises(PreconditionFailed):
        documents.put(db, "c", "ghost", b"{}", if_match='"abc"')
    with pytest.raises(NotFound):
        documents.get(db, "c", "ghost")


def test_put_without_precondition_is_a_programming_error(db: Database) -> None:
    """put refuses to write blindly (neither If-Match nor If-None-Match)."""
    with pytest.raises(ValueError):
        documents.put(db, "c", "k", b"{}")
    with pytest.raises(NotFound):
        documents.get(db, "c", "k")


def test_if_match_star_and_lists(db: Database) -> None:
    """If-Match '*' matches any ETag and a comma list matches any member."""
    first, _ = documents.put(db, "c", "k", b"1", if_none_match=True)
    second, _ = documents.put(db, "c", "k", b"2", if_match="*")
    third, _ = documents.put(db, "c", "k", b"3", if_match=f'"nope", {second.etag}')
    assert documents.get(db, "c", "k").body == b"3"
    assert len({first.etag, second.etag, third.etag}) == 3


def test_weak_or_unquoted_etag_does_not_match(db: Database) -> None:
    """ETag comparison is strong: a weak or unquoted form of the tag does not match."""
    doc, _ = documents.put(db, "c", "k", b"1", if_none_match=True)
    for stale in (f"W/{doc.etag}", doc.etag.strip('"')):
        with pytest.raises(PreconditionFailed):
            documents.put(db, "c", "k", b"2", if_match=stale)
    assert documents.get(db, "c", "k").body == b"1"


def test_delete_needs_matching_etag(db: Database) -> None:
    """Delete with a stale ETag fails; with the current one the document is gone."""
    first, _ = documents.put(db, "c", "k", b"{}", if_none_match=True)
    second, _ = documents.put(db, "c", "k", b"[]", if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        documents.delete(db, "c", "k", if_match=first.etag)
    assert documents.get(db, "c", "k").body == b"[]"
    documents.delete(db, "c", "k", if_match=second.etag)
    with pytest.raises(NotFound):
        documents.get(db, "c", "k")
    with pytest.raises(NotFound):
        documents.delete(db, "c", "k", if_match="*")


def test_recreated_document_never_reuses_an_etag(db: Database) -> None:
    """A deleted-then-recreated document gets a fresh ETag, so old ones stay stale."""
    first, _ = documents.put(db, "c", "k", b"{}", if_none_match=True)
    documents.delete(db, "c", "k", if_match=first.etag)
    again, _ = documents.put(db, "c", "k", b"{}", if_none_match=True)
    assert again.etag != first.etag
    with pytest.raises(PreconditionFailed):
        documents.put(db, "c", "k", b"[]", if_match=first.etag)


@pytest.mark.parametrize("body", [b"", b"   \n", b"{", b'{"a": }', b"nope", b'{"a":1} {"b":2}'])
def test_invalid_json_is_refused(db: Database, body: bytes) -> None:
    """Empty, truncated or non-JSON bodies are refused and nothing is stored."""
    with pytest.raises(InvalidDocument):
        documents.put(db, "c", "k", body, if_none_match=True)
    with pytest.raises(NotFound):
        documents.get(db, "c", "k")


def test_body_over_limit_is_refused(db: Database) -> None:
    """A body past max_bytes is refused; one at the limit is accepted."""
    at_limit = b'"' + b"x" * 98 + b'"'
    assert len(at_limit) == 100
    documents.put(db, "c", "ok", at_limit, if_none_match=True, max_bytes=100)
    with pytest.raises(InvalidDocument):
        documents.put(db, "c", "big", b'"' + b"x" * 99 + b'"', if_none_match=True, max_bytes=100)
    with pytest.raises(NotFound):
        documents.get(db, "c", "big")


@pytest.mark.parametrize(
    ("collection", "key"),
    [("..", "k"), ("c", ".."), ("a/b", "k"), ("c", "a/b"), ("c", "a..b"), ("", "k"), ("c", "")],
)
def test_unsafe_names_are_refused(db: Database, collection: str, key: str) -> None:
    """Collections and keys with slashes, '..' or nothing at all are refused everywhere."""
    with pytest.raises(InvalidName):
        documents.put(db, collection, key, b"{}", if_none_match=True)
    with pytest.raises(InvalidName):
        documents.get(db, collection, key)
    with pytest.raises(InvalidName):
        documents.delete(db, collection, key, if_match="*")


def test_list_page_walks_collection_in_key_order(db: Database) -> None:
    """Paging with `after` visits every key of one collection once, in order."""
    keys = [f"k{i:02d}" for i in range(11)]
    for k in reversed(keys):
        documents.put(db, "c", k, b"{}", if_none_match=True)
    documents.put(db, "other", "k00", b"{}", if_none_match=True)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = documents.list_page(db, "c", after=after, limit=4)
        if not page:
            break
        assert len(page) <= 4
        seen.extend(d.key for d in page)
        after = page[-1].key
    assert seen == keys


def test_project_is_read_from_project_or_project_id(db: Database) -> None:
    """for_project finds documents naming the project via `project` or `projectId` only."""
    documents.put(db, "a", "1", b'{"project": "p1"}', if_none_match=True)
    documents.put(db, "b", "2", b'{"projectId": "p1"}', if_none_match=True)
    documents.put(db, "a", "3", b'{"project": "p2"}', if_none_match=True)
    documents.put(db, "a", "4", b'{"note": "p1"}', if_none_match=True)
    documents.put(db, "a", "5", b'["p1"]', if_none_match=True)
    found = [(d.collection, d.key) for d in documents.for_project(db, "p1")]
    assert found == [("a", "1"), ("b", "2")]


def test_project_follows_updates(db: Database) -> None:
    """Moving a document to another project moves it between project listings."""
    doc, _ = documents.put(db, "a", "1", b'{"project": "p1"}', if_none_match=True)
    documents.put(db, "a", "1", b'{"project": "p2"}', if_match=doc.etag)
    assert documents.for_project(db, "p1") == []
    assert [d.key for d in documents.for_project(db, "p2")] == ["1"]
