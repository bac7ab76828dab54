"""`fieldbox status`: one screen for the person at the box, from the admin overview's sources.

Each process and its health, jobs by state, what has not left the box yet, the last sync,
Litestream's lag and the data disk. `--json` gives the same facts to scripts. The exit
status is 1 when a process is not healthy, so `fieldbox status && …` can gate a script.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import msgspec

from appliance.cli.context import Context, pass_ctx
from appliance.config import FieldboxConfig


def _facts(cfg: FieldboxConfig) -> dict[str, Any]:
    from appliance.admin.boxstate import overview, probed_api
    from store.outbox import Outbox
    from store.paths import Layout
    from store.queue import Queue

    layout = Layout(cfg.data_dir)
    layout.ensure()
    outbox = Outbox(str(layout.outbox_db), cfg.store)
    queue = Queue(str(layout.queue_db), cfg.store, cfg.queue)
    try:
        # No key: the gateway's open /ready lists the backends' health.
        return overview(cfg, layout, outbox, queue, probed_api(cfg, layout), token="")
    finally:
        queue.close()
        outbox.close()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The same facts as JSON.")
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Processes, jobs, what has not left the box, last sync, disk; exit 1 if unhealthy."""
    facts = _facts(ctx.cfg)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(facts), indent=2))
    else:
        click.echo("\n".join(render(facts)))
    sys.exit(0 if facts["healthy"] else 1)


def render(facts: dict[str, Any]) -> list[str]:
    """The screen's lines."""
    lines = [f"fieldbox: {'healthy' if facts['healthy'] else 'NOT HEALTHY'}", "", "processes"]
    width = max(len(row.name) for row in facts["rows"])
    for row in facts["rows"]:
        extra = []
        if row.pid:
            extra.append(f"pid {row.pid}")
        if row.uptime_s is not None:
            extra.append(f"up {_span(row.uptime_s)}")
        if row.restarts:
            extra.append(f"{row.restarts} restarts")
        tail = f"  ({', '.join(extra)})" if extra else ""
        lines.append(f"  {row.name:<{width}}  {row.state:<8}  {row.detail}{tail}")
    jobs = facts["jobs"]
    lines.append("")
    lines.append("jobs          " + ", ".join(f"{n} {state}" for state, n in jobs.items()))
    if facts["draining"]:
        lines.append("              draining: no new jobs are claimed")
    backlog = facts["backlog"]
    oldest = backlog.oldest_created_at
    owed = f"{backlog.items} items, {_size(backlog.bytes)}"
    if oldest is not None:
        owed += f", oldest {_span(time.time() - oldest)} ago"
    lines.append(f"not in S3     {owed}")
    last = backlog.last_success_at
    synced = "never" if last is None else f"{_span(time.time() - last)} ago"
    if backlog.last_error:
        synced += f"; last error: {backlog.last_error}"
    lines.append(f"last sync     {synced}")
    lag = facts["litestream_max_lag_s"]
    lines.append(f"litestream    {'not running' if lag is None else f'lag {lag:.1f} s'}")
    machine = facts["machine"]
    disk = f"{_size(machine['disk_free'])} free of {_size(machine['disk_total'])}"
    lines.append(f"disk          {disk} ({facts['data_dir']})")
    return lines


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _span(seconds: float) -> str:
    secs = max(0, int(seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m {secs % 60}s"
    if secs < 86400:
        return f"{secs // 3600}h {secs % 3600 // 60}m"
    return f"{secs // 86400}d {secs % 86400 // 3600}h"
