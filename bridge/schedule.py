"""The bridge's clock: APScheduler 3 jobs for the nightly clean-up, the restore drill and the
sync-window boundaries, all read in `[bridge] timezone` (the host's zone when empty).

Jobs (ids):
  * `cleanup`, every day at `cleanup_at`: prune done outbox rows, expire resumable uploads,
    enforce the telemetry spool cap; `cleanup-startup` runs the same once after start-up.
  * `drill`, every day at `litestream.drill_at`: the restore drill (only with S3 and
    Litestream on: without a replica there is nothing to restore from).
  * `window-HH:MM`, at every window start and end: `window_changed` (new cap, wake uploads).

Jobs missed while the box was off: APScheduler keeps its jobs in memory, so a stopped process
remembers nothing and `misfire_grace_time` only covers a *running* process that was late (a
suspended machine, a blocked loop): there it is an hour for the nightly jobs, and unlimited for
window changes (they recompute from the clock, so late is always right). On top of that:
  * the clean-up runs once shortly after every start-up. It is cheap and idempotent, and
    field-office boxes are often switched off at night; without this they would never prune.
  * the drill does not catch up. It downloads replicas and would compete with the morning's
    uploads; its last verdict and time are in /health, so a box that is never on at
    `drill_at` shows a stale drill and the operator moves `drill_at` into its working hours.
`coalesce` is on everywhere and `max_instances` is 1: a job never runs twice back to back.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from bridge.config import BridgeConfig

NIGHTLY_GRACE_S = 3600
STARTUP_CLEANUP_DELAY_S = 60.0


@dataclass(frozen=True)
class NightlyJobs:
    """What the scheduled jobs call; the lead wires them to the stores, the drill and uploads."""

    prune_outbox: Callable[[], int]
    """Delete outbox rows done more than 7 days ago; return how many."""

    expire_uploads: Callable[[], int]
    """Delete expired resumable uploads; return how many."""

    enforce_spool_cap: Callable[[], int]
    """Keep the telemetry spool under its cap; return how many files were dropped."""

    drill: Callable[[], object]
    """The restore drill (blocking, or returning an awaitable)."""

    window_changed: Callable[[], None]
    """A sync window opened or closed: apply its cap and wake the uploader (runs in the loop)."""


class _Runner:
    """The job bodies: blocking work goes to a thread, every failure is logged, none escapes."""

    def __init__(self, jobs: NightlyJobs) -> None:
        self.jobs = jobs
        self.log = structlog.get_logger("fieldbox.bridge")

    async def cleanup(self) -> dict[str, int]:
        """Run every clean-up step; one failing does not skip the others."""
        steps = {
            "outbox_pruned": self.jobs.prune_outbox,
            "uploads_expired": self.jobs.expire_uploads,
            "telemetry_dropped": self.jobs.enforce_spool_cap,
        }
        done: dict[str, int] = {}
        for name, step in steps.items():
            try:
                done[name] = int(await asyncio.to_thread(step))
            except Exception as exc:
                self.log.error(
                    "cleanup_step_failed", step=name, error=f"{type(exc).__name__}: {exc}"
                )
        self.log.info("cleanup_done", **done)
        return done

    async def drill(self) -> None:
        """Run the restore drill to its end."""
        self.log.info("drill_starting")
        try:
            result = await asyncio.to_thread(self.jobs.drill)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.log.error("drill_failed", error=f"{type(exc).__name__}: {exc}")

    async def window_changed(self) -> None:
        """Tell the lead a window boundary passed (in the loop: it wakes asyncio waiters)."""
        try:
            self.jobs.window_changed()
        except Exception as exc:
            self.log.error("window_change_failed", error=f"{type(exc).__name__}: {exc}")


def _cron(hhmm: str, zone: ZoneInfo | None) -> CronTrigger:
    hour, minute = (int(x) for x in hhmm.split(":"))
    return CronTrigger(hour=hour, minute=minute, second=0, timezone=zone)


def build_scheduler(
    cfg: BridgeConfig,
    jobs: NightlyJobs,
    *,
    now: datetime | None = None,
    startup_cleanup_delay_s: float = STARTUP_CLEANUP_DELAY_S,
) -> AsyncIOScheduler:
    """A scheduler with every bridge job added (not started: `start()` inside the loop)."""
    zone = ZoneInfo(cfg.timezone) if cfg.timezone else None
    scheduler = AsyncIOScheduler(timezone=zone) if zone is not None else AsyncIOScheduler()
    run = _Runner(jobs)
    nightly: dict[str, Any] = {
        "coalesce": True,
        "max_instances": 1,
        "misfire_grace_time": NIGHTLY_GRACE_S,
    }
    scheduler.add_job(run.cleanup, _cron(cfg.cleanup_at, zone), id="cleanup", **nightly)
    start = (now or datetime.now().astimezone()) + timedelta(seconds=startup_cleanup_delay_s)
    scheduler.add_job(run.cleanup, DateTrigger(start), id="cleanup-startup", **nightly)
    if cfg.remote and cfg.litestream.enabled:  # no replica, nothing to restore from
        scheduler.add_job(run.drill, _cron(cfg.litestream.drill_at, zone), id="drill", **nightly)
    boundaries = sorted({t for w in cfg.windows for t in (w.start, w.end)})
    for hhmm in boundaries:
        scheduler.add_job(
            run.window_changed,
            _cron(hhmm, zone),
            id=f"window-{hhmm}",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
    return scheduler


def next_runs(scheduler: AsyncIOScheduler, now: datetime) -> dict[str, datetime | None]:
    """Each job's next run time after `now` (for status and tests; works before `start()`)."""
    out: dict[str, datetime | None] = {}
    for job in scheduler.get_jobs():
        out[str(job.id)] = job.trigger.get_next_fire_time(None, now)
    return out
