"""`fieldbox drain`: take a box out of the job rotation before an update, and back in after.

Draining sets a flag under the data root that every worker checks before each claim; jobs
already running go on to the end. `--wait` then blocks until no job holds a live lease of
a worker on this host, which is what a rolling update waits for before it restarts the
units (a stop after a timeout is still safe: SIGTERM releases running jobs, and they
resume at their last finished stage elsewhere or after the restart).

Exit codes: 0 done (drained, or the flag changed as asked); 1 `--wait` timed out with jobs
still running; 2 bad usage or config.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from appliance.cli.context import Context, pass_ctx
from appliance.config import FieldboxConfig

_POLL_S = 0.5


def _layout(cfg: FieldboxConfig) -> Any:
    from store.paths import Layout

    return Layout(cfg.data_dir)


def _refuse_foreign_root(layout: Any) -> None:
    # Root writing into a data root another user owns leaves root-owned files behind (the
    # flag, SQLite's -wal and -shm files) that the services, run as that user, cannot use.
    if os.geteuid() != 0:
        return
    try:
        owner = layout.root.stat().st_uid
    except FileNotFoundError:
        return
    if owner != 0:
        click.echo(
            f"run this as the owner of {layout.root} (uid {owner}), e.g. "
            "`sudo -u fieldbox fieldbox drain`: as root it would leave files there that "
            "the services cannot write",
            err=True,
        )
        sys.exit(2)


def _job_line(job: Any) -> str:
    stage = f"{job.stage or '-'} {job.fraction:.0%}"
    return f"  {job.id}\t{job.kind}\t{stage}\tworker {job.lease_owner}"


def _running(cfg: FieldboxConfig, layout: Any) -> list[Any]:
    from appliance.worker_status import running_here
    from store.queue import Queue

    if not layout.queue_db.exists():
        return []  # no queue yet: nothing has ever run here
    queue = Queue(str(layout.queue_db), cfg.store, cfg.queue)
    try:
        return running_here(queue)
    finally:
        queue.close()


def wait_drained(
    cfg: FieldboxConfig, timeout_s: float | None, *, poll_s: float = _POLL_S
) -> list[Any]:
    """Wait until no job runs on this host's workers; the jobs still running at the timeout."""
    layout = _layout(cfg)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    shown: tuple[tuple[str, str, int], ...] | None = None
    while True:
        jobs = _running(cfg, layout)
        if not jobs:
            return []
        # One progress block whenever the set of jobs or their stage changes, not per poll.
        now = tuple((j.id, j.stage or "", int(j.fraction * 10)) for j in jobs)
        if now != shown:
            shown = now
            click.echo(f"waiting for {len(jobs)} running job(s):")
            for job in jobs:
                click.echo(_job_line(job))
        if deadline is not None and time.monotonic() >= deadline:
            return jobs
        time.sleep(poll_s if deadline is None else min(poll_s, deadline - time.monotonic()))


@click.command("drain")
@click.option("--off", is_flag=True, help="Stop draining: workers claim jobs again.")
@click.option(
    "--wait", "wait_", is_flag=True, help="Then wait until no job runs on this box's workers."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="With --wait: give up after this many seconds (exit 1). Default: wait forever.",
)
@click.option("--reason", default="", help="Why (kept in the flag file, shown by --status).")
@click.option("--status", "show", is_flag=True, help="Only show whether the box is draining.")
@pass_ctx
def drain(
    ctx: Context, off: bool, wait_: bool, timeout: float | None, reason: str, show: bool
) -> None:
    """Stop claiming new jobs; running jobs finish (or are released if the worker stops)."""
    from appliance.worker_status import clear_drain, drain_path, is_draining, set_drain

    if off and wait_:
        raise click.UsageError("--off and --wait do not go together")
    if timeout is not None and not wait_:
        raise click.UsageError("--timeout only applies with --wait")
    cfg = ctx.cfg
    layout = _layout(cfg)
    _refuse_foreign_root(layout)
    if show:
        _show(cfg, layout, drain_path(layout))
        return
    if off:
        was = clear_drain(layout)
        click.echo("drain off: workers claim jobs again" + ("" if was else " (was not draining)"))
        return
    was = is_draining(layout)
    set_drain(layout, reason)
    click.echo("draining: workers claim no new jobs" + (" (was already draining)" if was else ""))
    if not wait_:
        return
    left = wait_drained(cfg, timeout)
    if left:
        click.echo(f"timed out after {timeout:g} s with {len(left)} job(s) still running", err=True)
        sys.exit(1)
    click.echo("drained: no job is running on this box")


def _show(cfg: FieldboxConfig, layout: Any, flag: Any) -> None:
    try:
        detail = flag.read_text().strip()
    except FileNotFoundError:
        detail = None
    click.echo(f"draining: {'yes ' + detail if detail is not None else 'no'}")
    jobs = _running(cfg, layout)
    click.echo(f"running here: {len(jobs)}")
    for job in jobs:
        click.echo(_job_line(job))
