"""`fieldbox restore`: a location database (or, with --all, every database of the box) back
from its Litestream replica in S3."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from appliance.cli.context import Context, pass_ctx

if TYPE_CHECKING:
    from bridge.restore_blobs import Fetched
    from store.paths import Layout


@click.command()
@click.option("--location", "location", default=None, help="Location id to restore.")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Every location replica in S3, and this box's queue and outbox (a replaced box).",
)
@click.option(
    "--to",
    "to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write it (default: the location's own path, if it has no DB).",
)
@click.option(
    "--timestamp", default=None, help="Point in time (RFC 3339, e.g. 2026-12-01T10:00:00Z)."
)
@click.option("--account", default=None, help="Account, when the location is not on this box.")
@click.option(
    "--geo-prefix", default=None, help="Geo prefix, when the location is not on this box."
)
@click.option(
    "--blobs",
    is_flag=True,
    help="With --all: also copy back from S3 every asset's bytes that are not on the box.",
)
@click.option("--force", is_flag=True, help="Replace an existing file (at --to, or with --all).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def restore(
    ctx: Context,
    location: str | None,
    everything: bool,
    to: Path | None,
    timestamp: str | None,
    account: str | None,
    geo_prefix: str | None,
    blobs: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Restore a location DB (or, with --all, every DB of a replaced box) from S3, checked."""
    from dataclasses import asdict

    from bridge.restore import RestoreError, location_target, restore_target
    from store.errors import StoreError
    from store.locations import Locations
    from store.paths import Layout

    if everything == (location is not None):
        raise click.UsageError("give either --location ID or --all")
    if everything and (to or account or geo_prefix):
        raise click.UsageError("--all restores each DB to its own place: no --to/--account")
    if blobs and not everything:
        raise click.UsageError("--blobs goes with --all")
    cfg = ctx.cfg
    layout = Layout(cfg.data_dir)
    if location is None:
        _restore_all(ctx, layout, timestamp, force, as_json, blobs)
        return
    locs = Locations(layout, cfg.store)
    try:
        target = location_target(cfg.bridge, layout, locs, location, account, geo_prefix)
        result = restore_target(cfg.bridge, target, to or target.path, timestamp, force)
    except (RestoreError, StoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        locs.close()
    if as_json:
        click.echo(json.dumps(asdict(result)))
        return
    rows = sum(result.tables.values())
    click.echo(
        f"restored {location} to {result.path}: integrity {result.integrity}, "
        f"{len(result.tables)} tables, {rows} rows, {result.seconds:.1f}s"
    )


def _restore_all(
    ctx: Context, layout: Layout, timestamp: str | None, force: bool, as_json: bool, blobs: bool
) -> None:
    from dataclasses import asdict

    from bridge.restore import RestoreError
    from bridge.restore_all import restore_all

    try:
        outcomes = restore_all(ctx.cfg.bridge, layout, timestamp, force)
    except RestoreError as exc:
        raise click.ClickException(str(exc)) from exc
    fetched = _fetch_blobs(ctx, layout) if blobs else None
    if as_json:
        doc: dict[str, object] = {"databases": [asdict(o) for o in outcomes]}
        if fetched is not None:
            doc["blobs"] = asdict(fetched)
        click.echo(json.dumps(doc))
    else:
        if not outcomes:
            click.echo("no replicas found under this prefix")
        for o in outcomes:
            if o.restored is not None:
                rows = sum(o.restored.tables.values())
                detail = f"integrity {o.restored.integrity}, {rows} rows"
            else:
                detail = o.detail
            click.echo(f"{o.state:9} {o.name:32} {o.path}: {detail}")
        if fetched is not None:
            click.echo(
                f"blobs: {fetched.fetched} copied back ({fetched.bytes} bytes), "
                f"{fetched.present} already here, {len(fetched.missing)} not in S3, "
                f"{len(fetched.failed)} failed"
            )
            for line in fetched.failed + [f"{m}: not in S3" for m in fetched.missing]:
                click.echo(f"  {line}")
    problems = [o.name for o in outcomes if o.state == "failed"]
    if fetched is not None and (fetched.failed or fetched.missing):
        problems.append(f"{len(fetched.failed) + len(fetched.missing)} blob(s)")
    if problems:
        raise click.ClickException(f"not restored: {', '.join(problems)}")


def _fetch_blobs(ctx: Context, layout: Layout) -> Fetched:
    from bridge.restore_blobs import fetch_missing_blobs
    from store.locations import Locations

    locs = Locations(layout, ctx.cfg.store)
    bar: Any = None

    def progress(n: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # the total is known once the scan of the assets is done
            bar = click.progressbar(length=total, label="fetching blobs", file=sys.stderr)
            bar.__enter__()
        bar.update(n)

    try:
        return fetch_missing_blobs(ctx.cfg.bridge, layout, locs, progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        locs.close()
