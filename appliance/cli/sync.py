"""`fieldbox sync ...`: what the box still owes S3, and a pass that sends it right now."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import msgspec

from appliance.cli.context import Context, pass_ctx
from appliance.config import FieldboxConfig

# `sync now` passes again while another process (the bridge daemon) holds rows, at most this long.
_BUSY_WAIT_S = 600.0


@click.group()
def sync() -> None:
    """Blob uploads to S3: the backlog, and a pass right now."""


def _stores(cfg: FieldboxConfig) -> tuple[Any, Any, Any]:
    from store.locations import Locations
    from store.outbox import Outbox
    from store.paths import Layout

    layout = Layout(cfg.data_dir)
    layout.ensure()
    return layout, Locations(layout, cfg.store), Outbox(str(layout.outbox_db), cfg.store)


def _remote(cfg: FieldboxConfig) -> str:
    s3 = cfg.bridge.s3
    if not cfg.bridge.remote:
        return "no remote ([bridge.s3] bucket is not set; the outbox keeps everything)"
    return f"s3://{s3.bucket}/{s3.prefix} at {s3.endpoint_url or 'AWS S3'}"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _ago(at: float | None) -> str:
    if at is None:
        return "never"
    secs = max(0, int(time.time() - at))
    if secs < 60:
        span = f"{secs}s"
    elif secs < 3600:
        span = f"{secs // 60}m {secs % 60}s"
    elif secs < 86400:
        span = f"{secs // 3600}h {secs % 3600 // 60}m"
    else:
        span = f"{secs // 86400}d {secs % 86400 // 3600}h"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} ({span} ago)"


@sync.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the backlog as JSON.")
@pass_ctx
def sync_status(ctx: Context, as_json: bool) -> None:
    """The backlog: items and bytes not yet in S3, the oldest, the last success and error."""
    from bridge.daemon import read_status

    cfg = ctx.cfg
    layout, locs, outbox = _stores(cfg)
    try:
        backlog = outbox.backlog()
    finally:
        outbox.close()
        locs.close()
    daemon = read_status(layout)
    if as_json:
        out = {"remote": _remote(cfg), "backlog": backlog, "bridge": daemon}
        click.echo(msgspec.json.format(msgspec.json.encode(out), indent=2))
        return
    oldest = backlog.oldest_created_at
    click.echo(f"remote:        {_remote(cfg)}")
    click.echo(f"backlog:       {backlog.items} items, {_size(backlog.bytes)}")
    click.echo(f"oldest:        {_ago(oldest) if oldest is not None else '-'}")
    click.echo(f"last success:  {_ago(backlog.last_success_at)}")
    error = backlog.last_error or "none"
    if backlog.last_error:
        error += f" ({_ago(backlog.last_error_at)})"
    click.echo(f"last error:    {error}")
    if daemon is None:
        click.echo("bridge:        has not run on this box")
    else:
        state = "running" if daemon.get("alive") else "not running"
        uploader = daemon.get("uploader") or {}
        click.echo(f"bridge:        {state} ({uploader.get('state', 'unknown')})")


@sync.command("now")
@pass_ctx
def sync_now(ctx: Context) -> None:
    """Upload the whole backlog now (retry delays and sync windows ignored); exit 1 if any is left.

    The cap is `[bridge.upload] bandwidth_bytes_per_s`. Rows the bridge daemon is sending
    at the same moment are left to it, and this waits for them.
    """
    import asyncio

    from appliance.observe import configure_logging
    from bridge.throttle import Throttle
    from bridge.uploader import Uploader

    cfg = ctx.cfg
    # Only problems in the log: the progress bar and the summary are the output.
    configure_logging(msgspec.structs.replace(cfg.log, level="warning"), "sync")
    layout, locs, outbox = _stores(cfg)
    try:
        if not cfg.bridge.remote:
            left = outbox.backlog().items
            click.echo(f"{_remote(cfg)}: {left} items wait in the outbox", err=True)
            sys.exit(0 if left == 0 else 1)
        outbox.retry_all_now()
        uploader = Uploader(
            cfg.bridge, layout, locs, outbox, Throttle(cfg.bridge.upload.bandwidth_bytes_per_s)
        )
        start = time.monotonic()
        with click.progressbar(
            length=max(1, outbox.backlog().bytes), label="uploading", file=sys.stderr
        ) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = max(1, total)
                bar.update(max(0, done - bar.pos))

            result = asyncio.run(uploader.drain_once(progress))
            totals = [result.uploaded, result.already_there, result.failed]
            # Rows the bridge daemon is sending right now: wait for it, then look again.
            while result.busy and result.error is None and time.monotonic() - start < _BUSY_WAIT_S:
                time.sleep(1.0)
                result = asyncio.run(uploader.drain_once(progress))
                totals = [a + b for a, b in zip(totals, (result.uploaded, result.already_there,
                                                         result.failed), strict=True)]  # fmt: skip
        backlog = outbox.backlog()
    finally:
        outbox.close()
        locs.close()
    click.echo(
        f"uploaded {totals[0]} blobs ({_size(uploader.status()['bytes_sent'])}), "
        f"{totals[1]} already in S3, {totals[2]} failed; "
        f"backlog: {backlog.items} items, {_size(backlog.bytes)}"
    )
    if backlog.items:
        click.echo(f"last error: {result.error or backlog.last_error or 'none'}", err=True)
        sys.exit(1)
