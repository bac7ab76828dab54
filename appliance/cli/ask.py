"""`fieldbox ask` and `fieldbox index rebuild`: a location's records, asked and re-indexed."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
import msgspec

from appliance.cli.context import Context, pass_ctx


def _stores(ctx: Context) -> tuple[Any, Any, Any]:
    from store import keys
    from store.locations import Locations
    from store.paths import Layout

    layout = Layout(ctx.cfg.data_dir)
    layout.ensure()
    return (
        layout,
        Locations(layout, ctx.cfg.store),
        keys.open_keys(str(layout.keys_db), ctx.cfg.store),
    )


@click.command("ask")
@click.option("--location", "location_id", required=True, help="The location to ask about.")
@click.option(
    "--project", default=None, help="Only this project's records (and the location's own)."
)
@click.option("--alias", default=None, help="Gateway model or alias (default `[ask] alias`).")
@click.option("--json", "as_json", is_flag=True, help="The whole answer as JSON.")
@click.argument("question")
@pass_ctx
def ask(
    ctx: Context,
    location_id: str,
    project: str | None,
    alias: str | None,
    as_json: bool,
    question: str,
) -> None:
    """Answer QUESTION from the location's own records, with the records it rests on."""
    from appliance.ask import Asker, AskRequest
    from appliance.ask_index import facts_reader
    from appliance.gateway_calls import GatewayCalls, GatewayFailed
    from store.errors import StoreError

    cfg = ctx.cfg
    if len(question) > cfg.ask.max_question_chars:
        raise click.ClickException(
            f"the question is longer than {cfg.ask.max_question_chars} characters"
        )
    layout, locs, key_db = _stores(ctx)

    async def run() -> Any:
        calls = GatewayCalls(cfg, layout, key_db)
        try:
            facts_of = facts_reader(layout, locs)
            asker = Asker(calls, facts_of, cfg.ask.passages, cfg.ask.max_tokens, cfg.ask.alias)
            req = AskRequest(question=question, project=project, alias=alias)
            return await asker.ask(locs.db(location_id), req)
        finally:
            await calls.close()

    try:
        locs.get(location_id)
        answer = asyncio.run(run())
    except (StoreError, GatewayFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        key_db.close()
        locs.close()
    if as_json:
        sys.stdout.write(msgspec.json.encode(answer).decode() + "\n")
        return
    click.echo(answer.answer)
    for c in answer.citations:
        where = f" at {c.t:.1f} s" if c.t is not None else ""
        click.echo(f"  [{c.source}] {c.id}{where}: {c.quote}")


@click.group()
def index() -> None:
    """The ask index of each location (what `ask` retrieves from)."""


@index.command("rebuild")
@click.option("--location", "location_id", default=None, help="Only this location (default: all).")
@pass_ctx
def index_rebuild(ctx: Context, location_id: str | None) -> None:
    """Index every document, asset and scene-facts track again, from scratch.

    The text index is whole when this returns; the api gives the chunks their vectors
    (through the gateway's embeddings model) as soon as it runs.
    """
    from appliance.ask_index import rebuild
    from store.errors import StoreError

    layout, locs, key_db = _stores(ctx)
    key_db.close()
    try:
        ids = [location_id] if location_id else [loc.id for loc in locs.list()]
        for loc_id in ids:
            locs.get(loc_id)
            counts = rebuild(layout, locs, loc_id)
            click.echo(f"{loc_id}\t{counts['chunks']} chunks\t{counts['unembedded']} to embed")
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        locs.close()
