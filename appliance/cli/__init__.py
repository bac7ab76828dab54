"""The `fieldbox` command: a thin layer that loads config once and hands it down.

The root group lives here; each subcommand lives in a module of its own in this package
and is added below. Those modules import only `appliance.cli.context`, never this module,
so no import runs in a circle.
"""

from __future__ import annotations

import os

import click

from appliance.cli import ask, box, fleet, jobs, restore, serve, status, sync, tunnel
from appliance.cli.context import Context
from appliance.config import find_config_path


@click.group()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (TOML)."
)
@click.version_option(package_name="fieldbox")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """fieldbox: the field-office edge appliance."""
    ctx.obj = Context(find_config_path(config_path, dict(os.environ)))


for command in (
    box.check_config,
    box.config,
    serve.serve,
    serve.up,
    status.status,
    box.keys,
    box.models,
    box.uploads,
    jobs.jobs,
    ask.ask,
    ask.index,
    sync.sync,
    restore.restore,
    fleet.drain,
    tunnel.tunnel,
):
    main.add_command(command)
