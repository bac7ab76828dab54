"""Fixtures the store's tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.config import StoreConfig
from store.db import Database
from store.locations import Location, Locations
from store.paths import Layout


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """The database of one fresh location."""
    locs = Locations(Layout(tmp_path), StoreConfig())
    locs.create(Location(id="loc1", account="acme", geo_prefix="u4pr", name="12 Main St"))
    try:
        yield locs.db("loc1")
    finally:
        locs.close()
