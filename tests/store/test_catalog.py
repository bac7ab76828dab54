"""Asset listing across locations: newest first, one entry per sha256, stable cursor paging."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import assets, catalog
from store.assets import Asset
from store.config import StoreConfig
from store.errors import InvalidName
from store.locations import Location, Locations
from store.paths import Layout

_counter = itertools.count(1)


@pytest.fixture
def locs(tmp_path: Path) -> Iterator[Locations]:
    """Two locations, `north` and `south`, on a fresh data root."""
    store = Locations(Layout(tmp_path / "data"), StoreConfig())
    store.create(Location(id="north", account="acme", geo_prefix="u4pr", name="N"))
    store.create(Location(id="south", account="acme", geo_prefix="9q8y", name="S"))
    try:
        yield store
    finally:
        store.close()


def _add(
    locs: Locations, location: str, content: str, at: float, project: str | None = "p1"
) -> Asset:
    n = next(_counter)
    asset = Asset(
        id=f"{location}.{n:020x}",
        location=location,
        project=project,
        kind="image",
        filename=f"{content}.jpg",
        mime_type="image/jpeg",
        size=len(content),
        sha256=hashlib.sha256(content.encode()).hexdigest(),
        created_at=at,
        metadata={},
    )
    return assets.create(locs.db(location), asset)


def _all(
    locs: Locations, *, limit: int, project: str | None = None, location: str | None = None
) -> list[str]:
    """Follow cursors to the end; return every listed id in order."""
    ids: list[str] = []
    cursor: str | None = None
    for _ in range(100):
        page, cursor = catalog.list_assets(
            locs, project=project, location=location, cursor=cursor, limit=limit
        )
        assert len(page) <= limit
        ids.extend(a.id for a in page)
        if cursor is None:
            return ids
    raise AssertionError("cursor never ended")


def test_newest_first_across_locations(locs: Locations) -> None:
    """Assets of every location are interleaved newest first."""
    a = _add(locs, "north", "a", 100.0)
    b = _add(locs, "south", "b", 200.0)
    c = _add(locs, "north", "c", 300.0)
    page, cursor = catalog.list_assets(locs, project=None, location=None, cursor=None, limit=10)
    assert [x.id for x in page] == [c.id, b.id, a.id]
    assert cursor is None


def test_same_bytes_are_listed_once_as_the_newest_copy(locs: Locations) -> None:
    """Duplicates by sha256, in one location or across two, show once: the newest copy."""
    _add(locs, "north", "same", 100.0)
    _add(locs, "north", "other", 150.0)
    _add(locs, "south", "same", 200.0)
    newest = _add(locs, "north", "same", 300.0)
    page, _ = catalog.list_assets(locs, project=None, location=None, cursor=None, limit=10)
    assert [x.sha256 for x in page].count(newest.sha256) == 1
    assert page[0].id == newest.id
    assert len(page) == 2


def test_project_filter(locs: Locations) -> None:
    """Filtering by project lists only that project's assets."""
    p1 = _add(locs, "north", "one", 100.0, project="p1")
    _add(locs, "south", "two", 200.0, project="p2")
    _add(locs, "north", "three", 300.0, project=None)
    page, _ = catalog.list_assets(locs, project="p1", location=None, cursor=None, limit=10)
    assert [x.id for x in page] == [p1.id]


def test_duplicate_in_another_project_still_listed_under_its_own(locs: Locations) -> None:
    """With a project filter, a newer copy in another project does not hide this project's one."""
    mine = _add(locs, "north", "same", 100.0, project="p1")
    _add(locs, "south", "same", 200.0, project="p2")
    page, _ = catalog.list_assets(locs, project="p1", location=None, cursor=None, limit=10)
    assert [x.id for x in page] == [mine.id]


def test_location_filter(locs: Locations) -> None:
    """Filtering by location lists only that location's assets."""
    _add(locs, "north", "a", 100.0)
    s = _add(locs, "south", "b", 200.0)
    _add(locs, "north", "c", 300.0)
    assert _all(locs, limit=10, location="south") == [s.id]


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 50])
def test_cursor_paging_visits_everything_once(locs: Locations, limit: int) -> None:
    """Following next_cursor lists each distinct asset exactly once, newest first."""
    expected: list[Asset] = []
    for i in range(12):
        loc = "north" if i % 3 else "south"
        expected.append(_add(locs, loc, f"file{i}", 1000.0 + i))
    # A few duplicates of older content (newer copies win) and an older duplicate.
    dup = _add(locs, "south", "file2", 2000.0)
    _add(locs, "north", "file5", 500.0)
    want = [dup.id] + [a.id for a in reversed(expected) if a.sha256 != dup.sha256]
    assert _all(locs, limit=limit) == want


def test_paging_with_equal_timestamps(locs: Locations) -> None:
    """Assets created in the same instant are still paged without loss or repetition."""
    made = [_add(locs, "north" if i % 2 else "south", f"x{i}", 500.0) for i in range(9)]
    got = _all(locs, limit=2)
    assert sorted(got) == sorted(a.id for a in made)
    assert len(got) == len(set(got))


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGpzb24", "WzEsMiwzXQ"])
def test_foreign_cursor_is_refused(locs: Locations, cursor: str) -> None:
    """A cursor that is not one of ours is InvalidName (an API 400), not a crash."""
    with pytest.raises(InvalidName):
        catalog.list_assets(locs, project=None, location=None, cursor=cursor, limit=10)


def test_cursor_round_trip(locs: Locations) -> None:
    """encode_cursor and decode_cursor agree on the position."""
    a = _add(locs, "north", "a", 123.5)
    assert catalog.decode_cursor(catalog.encode_cursor(a)) == (123.5, a.id)
