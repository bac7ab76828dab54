"""Locations: one folder and database each, created atomically, ids validated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.config import StoreConfig
from store.errors import Conflict, InvalidName, NotFound
from store.locations import Location, Locations
from store.paths import Layout


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """A fresh data root."""
    lay = Layout(tmp_path / "data")
    lay.ensure()
    return lay


@pytest.fixture
def locs(layout: Layout) -> Iterator[Locations]:
    """The locations of the fresh data root."""
    store = Locations(layout, StoreConfig())
    try:
        yield store
    finally:
        store.close()


def _loc(loc_id: str = "loc1", account: str = "acme", geo: str = "u4pr") -> Location:
    return Location(id=loc_id, account=account, geo_prefix=geo, name="12 Main St")


def test_create_puts_database_where_the_design_says(locs: Locations, layout: Layout) -> None:
    """A new location's database lives at locations/{account}/{geo}/{id}/location.db."""
    created = locs.create(_loc())
    assert created.created_at > 0
    assert (layout.root / "locations" / "acme" / "u4pr" / "loc1" / "location.db").is_file()
    leftovers = [p.name for p in (layout.root / "locations" / "acme" / "u4pr").iterdir()]
    assert leftovers == ["loc1"]


def test_get_and_list_after_create(locs: Locations) -> None:
    """Created locations can be read back and are listed sorted by id."""
    locs.create(_loc("zeta"))
    locs.create(_loc("alpha", account="other", geo="9q8y"))
    got = locs.get("alpha")
    assert (got.id, got.account, got.geo_prefix, got.name) == (
        "alpha",
        "other",
        "9q8y",
        "12 Main St",
    )
    assert [loc.id for loc in locs.list()] == ["alpha", "zeta"]


def test_locations_survive_reopening(layout: Layout, locs: Locations) -> None:
    """A second Locations on the same root (another process, a restart) sees what was made."""
    made = locs.create(_loc())
    other = Locations(layout, StoreConfig())
    try:
        got = other.get("loc1")
        assert got == made
        assert [loc.id for loc in other.list()] == ["loc1"]
    finally:
        other.close()


def test_duplicate_id_conflicts_even_in_other_case_or_account(locs: Locations) -> None:
    """An id already taken (in any case, under any account) is refused with Conflict."""
    locs.create(_loc("loc1"))
    with pytest.raises(Conflict):
        locs.create(_loc("loc1"))
    with pytest.raises(Conflict):
        locs.create(_loc("LOC1"))
    with pytest.raises(Conflict):
        locs.create(_loc("Loc1", account="someone-else", geo="zz"))
    assert [loc.id for loc in locs.list()] == ["loc1"]


@pytest.mark.parametrize(
    "loc",
    [
        _loc(".."),
        _loc("a/b"),
        _loc("-lead"),
        _loc("a.b"),
        _loc(""),
        _loc("x" * 129),
        _loc("loc1", account=".."),
        _loc("loc1", account="a/b"),
        _loc("loc1", geo="../x"),
        Location(id="loc1", account="acme", geo_prefix="u4pr", name=""),
    ],
)
def test_invalid_locations_are_refused_and_leave_nothing(
    locs: Locations, layout: Layout, loc: Location
) -> None:
    """Unsafe ids, accounts, geo prefixes or an empty name are refused before touching disk."""
    with pytest.raises(InvalidName):
        locs.create(loc)
    assert locs.list() == []
    assert [p.name for p in layout.locations_dir.iterdir() if not p.name.startswith(".")] == []


def test_longest_valid_id_is_accepted(locs: Locations) -> None:
    """An id of exactly 128 characters is fine."""
    long_id = "a" * 128
    locs.create(_loc(long_id))
    assert locs.get(long_id).id == long_id


def test_get_unknown_and_invalid(locs: Locations) -> None:
    """get raises NotFound for an unknown id and InvalidName for an unsafe one."""
    with pytest.raises(NotFound):
        locs.get("nope")
    with pytest.raises(InvalidName):
        locs.get("..")
    with pytest.raises(NotFound):
        locs.db("nope")


def test_half_made_location_is_invisible(locs: Locations, layout: Layout) -> None:
    """A leftover temp folder from a crashed create is not listed as a location."""
    tmp = layout.locations_dir / "acme" / "u4pr" / ".tmp-ghost-1234"
    tmp.mkdir(parents=True)
    (tmp / "location.db").write_bytes(b"")
    assert locs.list() == []
    with pytest.raises(NotFound):
        locs.get("ghost")
