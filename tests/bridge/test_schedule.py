"""The bridge scheduler: its jobs and their next run times for a fixed clock, and jobs firing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.config import BridgeConfig
from bridge.schedule import NIGHTLY_GRACE_S, NightlyJobs, build_scheduler, next_runs
from tests.conftest import make_config

OSLO = ZoneInfo("Europe/Oslo")
S3 = '[bridge.s3]\nbucket = "fieldbox-test"\n'
WINDOWS = (
    '[[bridge.windows]]\nstart = "19:00"\nend = "06:00"\n'
    '[[bridge.windows]]\nstart = "12:00"\nend = "13:00"\nbandwidth_bytes_per_s = 1000\n'
)


def _cfg(toml: str) -> BridgeConfig:
    return make_config(Path("/nonexistent"), toml).bridge


class Calls:
    """NightlyJobs whose callables count their calls (and can be told to fail)."""

    def __init__(self, failing: str = "") -> None:
        self.count: Counter[str] = Counter()
        self.failing = failing

    def _step(self, name: str) -> int:
        self.count[name] += 1
        if name == self.failing:
            raise RuntimeError(f"{name} broke")
        return 3

    def jobs(self, drill: object = None) -> NightlyJobs:
        """The callables, with `drill` replacing the counting drill when given."""
        return NightlyJobs(
            prune_outbox=lambda: self._step("prune"),
            expire_uploads=lambda: self._step("expire"),
            enforce_spool_cap=lambda: self._step("cap"),
            drill=drill or (lambda: self._step("drill")),  # type: ignore[arg-type]
            window_changed=lambda: self.count.update(["window"]),
        )


def test_jobs_and_next_run_times_in_the_configured_zone() -> None:
    """Clean-up, drill and one job per distinct window boundary, each next due at the right
    wall-clock time in Europe/Oslo; the start-up clean-up a minute after `now`."""
    cfg = _cfg(
        '[bridge]\ntimezone = "Europe/Oslo"\ncleanup_at = "02:30"\n'
        + WINDOWS
        + '[bridge.litestream]\ndrill_at = "03:45"\n'
        + S3
    )
    now = datetime(2026, 6, 10, 12, 0, 30, tzinfo=OSLO)
    scheduler = build_scheduler(cfg, Calls().jobs(), now=now)

    runs = next_runs(scheduler, now)

    def at(day: int, hh: int, mm: int) -> datetime:
        return datetime(2026, 6, day, hh, mm, tzinfo=OSLO)

    assert runs == {
        "cleanup": at(11, 2, 30),
        "cleanup-startup": now + timedelta(seconds=60),
        "drill": at(11, 3, 45),
        "window-06:00": at(11, 6, 0),
        "window-12:00": at(11, 12, 0),
        "window-13:00": at(10, 13, 0),
        "window-19:00": at(10, 19, 0),
    }
    utc = next_runs(scheduler, now.astimezone(ZoneInfo("UTC")))
    assert utc["cleanup"] == at(11, 2, 30)  # the same instant whatever zone `now` is in
    for job in scheduler.get_jobs():
        assert job.coalesce and job.max_instances == 1
        grace = None if job.id.startswith("window-") else NIGHTLY_GRACE_S
        assert job.misfire_grace_time == grace, job.id


def test_no_remote_no_windows_means_clean_up_only() -> None:
    """Without S3 there is no drill; without windows no window jobs; the local zone is used."""
    scheduler = build_scheduler(_cfg(""), Calls().jobs())
    assert sorted(j.id for j in scheduler.get_jobs()) == ["cleanup", "cleanup-startup"]
    now = datetime(2026, 1, 5, 1, 0).astimezone()
    nxt = next_runs(scheduler, now)["cleanup"]
    assert nxt is not None and (nxt.hour, nxt.minute) == (2, 30) and nxt > now


def test_the_startup_clean_up_fires_and_one_failing_step_skips_no_other() -> None:
    """The real scheduler in a loop runs the start-up clean-up: every step is called once even
    though one of them raises."""
    calls = Calls(failing="expire")

    async def go() -> None:
        scheduler = build_scheduler(_cfg(""), calls.jobs(), startup_cleanup_delay_s=0.2)
        scheduler.start()
        deadline = time.monotonic() + 10
        while calls.count["cap"] == 0:
            assert time.monotonic() < deadline, "the start-up clean-up never ran"
            await asyncio.sleep(0.05)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)

    asyncio.run(go())
    assert calls.count == Counter({"prune": 1, "expire": 1, "cap": 1})


@pytest.mark.parametrize("kind", ["blocking", "async"])
def test_the_drill_and_window_jobs_call_their_callbacks(kind: str) -> None:
    """A window boundary calls `window_changed`; the drill job runs a blocking drill in a thread
    and awaits one that returns a coroutine."""
    calls = Calls()
    done: list[str] = []

    async def async_drill() -> None:
        await asyncio.sleep(0)
        done.append("async")

    def drill() -> object:
        if kind == "async":
            return async_drill()
        done.append("blocking")
        return None

    scheduler = build_scheduler(_cfg(WINDOWS + S3), calls.jobs(drill))
    asyncio.run(scheduler.get_job("window-19:00").func())
    asyncio.run(scheduler.get_job("drill").func())
    assert calls.count["window"] == 1
    assert done == [kind]
