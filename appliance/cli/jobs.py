"""`fieldbox jobs ...`: the job queue from the box's shell (list, show, watch, retry, cancel)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import msgspec

from appliance.cli.context import Context, pass_ctx
from appliance.config import FieldboxConfig


@click.group()
def jobs() -> None:
    """Perception and splat jobs on the box's queue."""


def _queue(cfg: FieldboxConfig) -> Any:
    from store.paths import Layout
    from store.queue import Queue

    layout = Layout(cfg.data_dir)
    layout.ensure()
    return Queue(str(layout.queue_db), cfg.store, cfg.queue)


@contextmanager
def _clean_errors() -> Iterator[None]:
    # A missing job or a refused transition is a one-line message, not a traceback.
    from store.errors import StoreError

    try:
        yield
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def _job_line(job: Any) -> str:
    progress = f"{job.stage or '-'} {job.fraction:.0%}" if job.status == "running" else ""
    return f"{job.id}\t{job.kind}\t{job.status}\t{job.attempts}/{job.max_attempts}\t{progress}"


@jobs.command("list")
@click.option("--status", default=None, help="Only jobs in this state.")
@click.option("--kind", default=None, help="Only jobs of this kind.")
@click.option("--limit", default=50, show_default=True)
@pass_ctx
def jobs_list(ctx: Context, status: str | None, kind: str | None, limit: int) -> None:
    """Jobs, newest first: id, kind, status, attempts, stage."""
    for job in _queue(ctx.cfg).list(status=status, kind=kind, limit=limit):
        click.echo(_job_line(job))


@jobs.command("show")
@click.argument("job_id")
@pass_ctx
def jobs_show(ctx: Context, job_id: str) -> None:
    """One job as JSON, with its events."""
    queue = _queue(ctx.cfg)
    with _clean_errors():
        job = queue.get(job_id)
    out = {"job": job, "events": queue.events(job_id)}
    click.echo(msgspec.json.format(msgspec.json.encode(out), indent=2))


@jobs.command("watch")
@click.argument("job_id")
@pass_ctx
def jobs_watch(ctx: Context, job_id: str) -> None:
    """Follow a job with a progress bar until it ends; exit 1 unless it succeeded."""
    import time

    from store.queue import TERMINAL

    queue = _queue(ctx.cfg)
    with _clean_errors():
        job = queue.get(job_id)
    last = 0
    with click.progressbar(length=1000, label=job.kind, show_eta=False) as bar:
        done = 0
        while True:
            for ev in queue.events(job_id, last):
                last = ev.seq
                if ev.type in ("stage_started", "stage_done", "retrying", "failed", "dead"):
                    bar.label = f"{job.kind}: {ev.type} {ev.data.get('stage', '')}".strip()
            job = queue.get(job_id)
            target = 1000 if job.status == "succeeded" else int(job.fraction * 1000)
            if target != done:
                bar.update(target - done)
                done = target
            if job.status in TERMINAL:
                break
            time.sleep(0.5)
    click.echo(f"{job.id}: {job.status}" + (f" ({job.error})" if job.error else ""))
    if job.status != "succeeded":
        sys.exit(1)


@jobs.command("retry")
@click.argument("job_id")
@pass_ctx
def jobs_retry(ctx: Context, job_id: str) -> None:
    """Queue a failed, dead or cancelled job again."""
    with _clean_errors():
        click.echo(_job_line(_queue(ctx.cfg).retry(job_id)))


@jobs.command("cancel")
@click.argument("job_id")
@pass_ctx
def jobs_cancel(ctx: Context, job_id: str) -> None:
    """Cancel a job (a running one stops at its worker's next progress report)."""
    with _clean_errors():
        click.echo(_job_line(_queue(ctx.cfg).cancel(job_id)))
