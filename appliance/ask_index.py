"""Keeping every location's ask index current in the api, and rebuilding it from the CLI.

Chunks are written with their records (`store.search_index`); what is left to the api is
what needs more than the record's own transaction: records queued by a migration or a
rebuild (a scene-facts asset needs its blob read), and the vectors, which come from the
gateway's embeddings model. Both are durable queues in the location's database, so a crash
at any point leaves them to the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from appliance.ask import embed_pending
from appliance.gateway_calls import GatewayCalls, GatewayDeferred, GatewayFailed
from store import ingest, search_index
from store.errors import StoreError
from store.locations import Locations
from store.paths import Layout

PASS_INTERVAL_S = 3.0
"""How often the api looks for records and chunks other processes (the worker) added."""

SETTLE_S = 2.0
"""After a write wakes the indexer, how long it lets more writes gather: a burst of writes
(one key updated a hundred times) is indexed once, and the writes keep the writer lock."""


def facts_reader(layout: Layout, locs: Locations) -> Any:
    """`facts_of(asset_id)` for `search_index.catch_up`: the asset's blob read as JSON."""

    def facts_of(asset_id: str) -> dict[str, Any] | None:
        try:
            _, path = ingest.asset_file(layout, locs, asset_id)
        except (StoreError, OSError):
            return None
        return search_index.read_facts(path)

    return facts_of


def rebuild(layout: Layout, locs: Locations, location_id: str) -> dict[str, int]:
    """Empty one location's index and index every record again (vectors follow in the api)."""
    db = locs.db(location_id)
    with db.write() as conn:
        search_index.clear(conn)
    search_index.catch_up(db, facts_reader(layout, locs))
    return search_index.counts(db)


async def one_pass(layout: Layout, locs: Locations, calls: GatewayCalls) -> int:
    """Index what is queued and embed what has no vector, in every location; return chunks
    embedded."""
    facts_of = facts_reader(layout, locs)
    embedded = 0
    for loc in await asyncio.to_thread(locs.list):
        db = locs.db(loc.id)
        counts = await asyncio.to_thread(search_index.counts, db)
        if counts["pending"]:
            await asyncio.to_thread(search_index.catch_up, db, facts_of)
        if counts["unembedded"] or counts["pending"]:
            embedded += await embed_pending(db, calls, most=64, paced=True)
    return embedded


async def keep_current(
    layout: Layout, locs: Locations, calls: GatewayCalls, wake: asyncio.Event
) -> None:
    """Run `one_pass` when `wake` is set (a document write) or every few seconds, until
    cancelled; a gateway away is logged once, a gateway busy with chats not at all."""
    log = structlog.get_logger("fieldbox.ask")
    failing = ""
    while True:
        wake.clear()
        try:
            if await one_pass(layout, locs, calls):
                continue  # more may be waiting: no pause while there is work
            failing = ""
        except GatewayDeferred:
            failing = ""  # chats are running: the next pass, or a later one, embeds
        except GatewayFailed as exc:
            if exc.message != failing:
                log.warning("ask_index_waiting", reason=exc.message)
            failing = exc.message
        except Exception as exc:  # the indexer must outlive a bad pass
            log.warning("ask_index_pass_failed", error=repr(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), PASS_INTERVAL_S)
            await asyncio.sleep(SETTLE_S)
