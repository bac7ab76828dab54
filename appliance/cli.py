"""The `fieldbox` command: a thin layer that loads config once and hands it down."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
import msgspec

from appliance.config import ConfigError, FieldboxConfig, describe, find_config_path, load_config

if TYPE_CHECKING:
    from appliance.console import LogFormat


class Context:
    """What every subcommand gets: the config path, loaded on first use."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self.log_format: str | None = None  # `serve --log-format`, over `[log] format`
        self._cfg: FieldboxConfig | None = None

    @property
    def cfg(self) -> FieldboxConfig:
        """The loaded config; exits with the problems listed if it is invalid."""
        if self._cfg is None:
            try:
                cfg = load_config(self.config_path)
            except ConfigError as exc:
                click.echo(str(exc), err=True)
                sys.exit(2)
            if self.log_format is not None:
                log = msgspec.structs.replace(cfg.log, format=self.log_format)
                cfg = msgspec.structs.replace(cfg, log=log)
            self._cfg = cfg
        return self._cfg


pass_ctx = click.make_pass_decorator(Context)


@click.group()
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (TOML)."
)
@click.version_option(package_name="fieldbox")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """fieldbox: the field-office edge appliance."""
    import os

    ctx.obj = Context(find_config_path(config_path, dict(os.environ)))


@main.command("check-config")
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


@main.group()
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


@main.group()
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help="Log format of the process (default from [log] format).",
)
@pass_ctx
def serve(ctx: Context, log_format: str | None) -> None:
    """Run one fieldbox process in the foreground (what systemd runs)."""
    ctx.log_format = log_format


@serve.command("api")
@click.option("--host", default=None, help="Bind address (default from [api]).")
@click.option("--port", default=None, type=int, help="Port (default from [api]).")
@pass_ctx
def serve_api(ctx: Context, host: str | None, port: int | None) -> None:
    """The field API (Litestar on uvicorn)."""
    from appliance.app import create_app
    from appliance.errors import error_body
    from appliance.observe import configure_logging
    from appliance.serving import serve
    from store.rootlock import RootLocked, hold_api_lock, release_api_lock

    cfg = ctx.cfg
    try:
        # Held until the process ends: two apis on one root would race on uploads' finalize.
        lock = hold_api_lock(Path(cfg.data_dir))
    except RootLocked as exc:
        click.echo(f"fieldbox serve api: {exc}", err=True)
        sys.exit(1)
    configure_logging(cfg.log, "api")
    app = create_app(cfg)
    try:
        serve(
            app,
            host=host or cfg.api.host,
            port=port or cfg.api.port,
            stopping=app.state.stopping,
            error_body=error_body,
        )
    finally:
        release_api_lock(lock)


@serve.command("gateway")
@click.option("--host", default=None, help="Bind address (default from [gateway]).")
@click.option("--port", default=None, type=int, help="Port (default from [gateway]).")
@pass_ctx
def serve_gateway(ctx: Context, host: str | None, port: int | None) -> None:
    """The model gateway (OpenAI and Ollama APIs over the configured backends)."""
    import threading

    from appliance.observe import HttpMetrics, RequestObserver, configure_logging
    from appliance.serving import serve
    from inference.app import create_gateway_app
    from inference.errors import error_body

    cfg = ctx.cfg
    configure_logging(cfg.log, "gateway")
    app = create_gateway_app(cfg.gateway, cfg.inference, cfg.store)
    # Request ids, the access log line and HTTP metrics, into the gateway's own registry.
    app.asgi_handler = RequestObserver(app.asgi_handler, HttpMetrics(app.state.metrics.registry))
    serve(
        app,
        host=host or cfg.gateway.host,
        port=port or cfg.gateway.port,
        stopping=threading.Event(),
        error_body=error_body,
        loop="uvloop",
    )


@serve.command("worker")
@click.option("--undrain", is_flag=True, help="Clear the box's drain flag first.")
@pass_ctx
def serve_worker(ctx: Context, undrain: bool) -> None:
    """The job worker (perception and splat pipelines)."""
    import signal
    import threading

    from appliance.niceness import apply_worker_priority

    cfg = ctx.cfg
    # First, before any thread exists: threads inherit the niceness of their creator.
    priority = apply_worker_priority(cfg.worker)

    from appliance.observe import configure_logging
    from appliance.worker import Worker
    from appliance.workers import clear_drain
    from store.paths import Layout

    configure_logging(cfg.log, "worker")
    if priority:
        import structlog

        structlog.get_logger("fieldbox.worker").info("worker_priority", **priority)
    if undrain:
        clear_drain(Layout(cfg.data_dir))
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()  # only a flag: the worker's loop winds down

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Worker(cfg, stop).run()


@serve.command("bridge")
@pass_ctx
def serve_bridge(ctx: Context) -> None:
    """The bridge: outbox and telemetry to S3, Litestream, drop folder, sync windows."""
    import asyncio
    import signal

    from appliance import sdnotify
    from appliance.observe import configure_logging
    from bridge.daemon import Bridge
    from store.paths import Layout

    cfg = ctx.cfg
    configure_logging(cfg.log, "bridge")

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)  # only a flag: the parts wind down
        # The unit is Type=notify with a watchdog: READY=1 once every part runs, then pings
        # from the bridge's own loop (a blocked loop stops them, and systemd restarts it).
        watchdog = asyncio.create_task(sdnotify.watchdog_loop(), name="sd-watchdog")
        try:
            bridge = Bridge(cfg.bridge, cfg.store, Layout(cfg.data_dir))
            await bridge.run(stop, started=lambda: sdnotify.ready("bridge running"))
            sdnotify.stopping()
        finally:
            await sdnotify.stop_task(watchdog)

    asyncio.run(main_loop())


@main.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Bind address of every process."
)
@click.option("--api-port", default=None, type=int, help="Port of the field API.")
@click.option("--gateway-port", default=None, type=int, help="Port of the model gateway.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    help="console: readable lines; json: one event a line; auto: console on a terminal.",
)
@pass_ctx
def up(
    ctx: Context, host: str, api_port: int | None, gateway_port: int | None, log_format: str
) -> None:
    """Run every process in one tree (laptop or small box); Ctrl-C stops them all."""
    from appliance.supervisor import run_up

    code = run_up(
        ctx.cfg,
        ctx.config_path,
        host=host,
        api_port=api_port,
        gateway_port=gateway_port,
        log_format=cast("LogFormat", log_format),
    )
    sys.exit(code)


@main.group()
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


@main.group()
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


@main.group()
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


def _register_subgroups() -> None:
    from appliance.cli_fleet import drain
    from appliance.cli_jobs import jobs
    from appliance.cli_restore import restore
    from appliance.cli_status import status
    from appliance.cli_sync import sync
    from appliance.cli_tunnel import tunnel

    main.add_command(drain)
    main.add_command(jobs)
    main.add_command(restore)
    main.add_command(status)
    main.add_command(sync)
    main.add_command(tunnel)


_register_subgroups()
