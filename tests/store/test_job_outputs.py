"""A job output's asset: its id is fixed by (job, output), and storing it again writes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import assets, ingest
from store.config import StoreConfig
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Layout, Locations, Outbox]]:
    """A data root with one location, `loc1`, and its outbox."""
    layout = Layout(tmp_path / "data")
    layout.ensure()
    cfg = StoreConfig()
    locs = Locations(layout, cfg)
    locs.create(Location(id="loc1", account="acme", geo_prefix="u4pr", name="site"))
    outbox = Outbox(str(layout.outbox_db), cfg)
    try:
        yield layout, locs, outbox
    finally:
        outbox.close()
        locs.close()


def test_a_job_output_id_is_the_same_for_every_attempt_and_differs_per_output() -> None:
    """Same (job, output): same id, of the asset-id shape; another output or job: another id."""
    first = assets.job_output_id("loc1", "job_0123", 1_700_000_000.5, "splat")
    assert first == assets.job_output_id("loc1", "job_0123", 1_700_000_000.5, "splat")
    assert assets.location_of(first) == "loc1"
    assert first != assets.job_output_id("loc1", "job_0123", 1_700_000_000.5, "thumbnail")
    assert first != assets.job_output_id("loc1", "job_0124", 1_700_000_000.5, "splat")


def test_storing_an_output_again_after_its_outbox_row_was_pruned_adds_nothing(
    tmp_path: Path, stores: tuple[Layout, Locations, Outbox]
) -> None:
    """The asset exists and the bridge has uploaded and pruned its outbox row: a repeat
    returns the stored asset and owes S3 nothing again (no second upload)."""
    layout, locs, outbox = stores
    src = tmp_path / "facts.json"
    src.write_text('{"tracks": []}')
    fixed = assets.job_output_id("loc1", "job_1", 1_700_000_000.0, "scene_facts")

    def store() -> assets.Asset:
        return ingest.add_file(
            layout, locs, outbox, "loc1", src, kind="scene_facts", filename="f.json",
            mime_type="application/json", asset_id=fixed,
        )  # fmt: skip

    made = store()
    [row] = outbox.pending()
    outbox.mark_done(row.id)
    assert outbox.prune_done(older_than_s=-1) == 1
    assert store() == made
    conn = sqlite3.connect(layout.outbox_db)
    try:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    finally:
        conn.close()
    assert locs.db("loc1").read().execute("SELECT count(*) FROM assets").fetchone()[0] == 1
