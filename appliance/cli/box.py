"""The box's own settings and state from the shell: `check-config`, `config show|describe`,
`keys create|list|revoke`, `models list|use` (model slots) and `uploads clean`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from appliance.cli.context import Context, pass_ctx
from appliance.config import ConfigError, FieldboxConfig, describe, load_config


@click.command("check-config")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@pass_ctx
def check_config(ctx: Context, path: str | None) -> None:
    """Check a config file; print each problem with its line number."""
    target = Path(path) if path else ctx.config_path
    try:
        load_config(target)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"{target or '<built-in defaults>'}: ok")


@click.group()
def config() -> None:
    """Show the configuration."""


@config.command("show")
@pass_ctx
def config_show(ctx: Context) -> None:
    """The effective configuration as JSON."""
    click.echo(msgspec.json.format(msgspec.json.encode(ctx.cfg), indent=2))


@config.command("describe")
def config_describe() -> None:
    """Every setting with its default and what it does, as a commented TOML file."""
    click.echo("\n".join(describe()).lstrip())


@click.group()
def keys() -> None:
    """API keys for the field API and the gateway."""


def _keys_db(cfg: FieldboxConfig) -> Any:
    from store import keys as key_store
    from store.paths import Layout

    layout = Layout(cfg.data_dir)
    layout.ensure()
    return key_store.open_keys(str(layout.keys_db), cfg.store)


@keys.command("create")
@click.option("--scope", "scope", required=True, help="Comma list of field, gateway, admin.")
@click.option("--name", required=True, help="Who or what holds the key.")
@pass_ctx
def keys_create(ctx: Context, scope: str, name: str) -> None:
    """Create a key; the token (shown only now) is the last word printed."""
    from store import keys as key_store
    from store.errors import InvalidName

    try:
        scopes = key_store.parse_scopes(scope)
        key, token = key_store.create(_keys_db(ctx.cfg), name, scopes)
    except InvalidName as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(f"created key {key.id} ({','.join(key.scopes)}) for {key.name}; token: {token}")


@keys.command("list")
@pass_ctx
def keys_list(ctx: Context) -> None:
    """Every key: id, scopes, name, state."""
    from store import keys as key_store

    for key in key_store.list_all(_keys_db(ctx.cfg)):
        state = "revoked" if key.revoked_at else "active"
        click.echo(f"{key.id}\t{','.join(key.scopes)}\t{state}\t{key.name}")


@keys.command("revoke")
@click.argument("key_id")
@pass_ctx
def keys_revoke(ctx: Context, key_id: str) -> None:
    """Revoke a key at once."""
    from store import keys as key_store
    from store.errors import NotFound

    try:
        key_store.revoke(_keys_db(ctx.cfg), key_id)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {key_id}")


@click.group()
def models() -> None:
    """Model slots: `models/{slot}/{version}/` under the data root."""


@models.command("list")
@pass_ctx
def models_list(ctx: Context) -> None:
    """Every slot, its versions and what `latest` points at."""
    from inference.slots import list_slots
    from store.paths import Layout

    for slot, info in list_slots(Layout(ctx.cfg.data_dir).models_dir).items():
        versions = ", ".join(info["versions"])
        click.echo(f"{slot}\tlatest={info['latest'] or '-'}\t{versions}")


@models.command("use")
@click.argument("slot")
@click.argument("version")
@pass_ctx
def models_use(ctx: Context, slot: str, version: str) -> None:
    """Point a slot's `latest` at VERSION (restart the gateway to load it)."""
    from inference.slots import SlotError, set_latest
    from store.paths import Layout

    try:
        set_latest(Layout(ctx.cfg.data_dir).models_dir, slot, version)
    except SlotError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{slot}: latest = {version}")


@click.group()
def uploads() -> None:
    """Resumable uploads in flight."""


@uploads.command("clean")
@pass_ctx
def uploads_clean(ctx: Context) -> None:
    """Delete expired uploads and orphaned part files now."""
    from store.paths import Layout
    from store.uploads import Uploads

    layout = Layout(ctx.cfg.data_dir)
    layout.ensure()
    store = Uploads(layout, ctx.cfg.store)
    click.echo(f"removed {store.expire()} expired uploads")
