"""`fieldbox restore`: a location database back from its Litestream replica in S3."""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliance.cli import Context, pass_ctx


@click.command()
@click.option("--location", "location", required=True, help="Location id to restore.")
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
@click.option("--force", is_flag=True, help="Replace an existing file at --to.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def restore(
    ctx: Context,
    location: str,
    to: Path | None,
    timestamp: str | None,
    account: str | None,
    geo_prefix: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Restore a location DB from S3 and check it (opens, passes PRAGMA integrity_check)."""
    from dataclasses import asdict

    from bridge.restore import RestoreError, location_target, restore_target
    from store.errors import StoreError
    from store.locations import Locations
    from store.paths import Layout

    cfg = ctx.cfg
    layout = Layout(cfg.data_dir)
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
