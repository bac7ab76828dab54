"""`fieldbox serve api|gateway|worker|bridge` (what systemd runs), and `fieldbox up` (all four)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from appliance.cli.context import Context, pass_ctx

if TYPE_CHECKING:
    from appliance.console import LogFormat


@click.group()
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
    from appliance.worker_status import clear_drain
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


@click.command()
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
