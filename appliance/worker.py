"""`fieldbox serve worker`: claims jobs from the queue and runs perception and splat pipelines.

Each job thread claims a job, runs its pipeline in `jobs/{id}/` (stages resume after a
crash), renews the lease by heartbeat, and records the outcome. Signals only set the stop
event; on stop every running job is interrupted at its next progress report and released
back to the queue, where it resumes at its last finished stage. While the box's drain flag
is set the job threads claim nothing new. Under systemd the main loop (the heartbeat) says
READY=1 once the job threads run, pings the watchdog, and says STOPPING=1 when the stop begins.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from appliance import sdnotify
from appliance.config import FieldboxConfig
from appliance.job_kinds import execute, reached, reached_fraction
from appliance.worker_status import gpu_status, is_draining, remove_status, write_status
from perception.progress import Cancelled, InvalidInput, OutOfMemory, Reporter, Unavailable
from store.errors import Conflict, StoreError
from store.locations import Locations
from store.outbox import Outbox
from store.paths import Layout
from store.queue import Job, Queue

_PROGRESS_EVERY_S = 0.5
# How long a stop waits for the job threads to release their jobs (a stage that reports no
# progress cannot be interrupted sooner); the unit's TimeoutStopSec is longer than this.
_STOP_GRACE_S = 60.0


@dataclass
class Running:
    """A job in progress in one job thread."""

    job: Job
    stop: threading.Event = field(default_factory=threading.Event)
    stage: str = ""
    fraction: float = 0.0
    last_report: float = 0.0


class Worker:
    """The job threads of one worker process."""

    def __init__(self, cfg: FieldboxConfig, stop: threading.Event) -> None:
        self.cfg = cfg
        self.stop = stop
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.layout = Layout(cfg.data_dir)
        self.layout.ensure()
        self.queue = Queue(str(self.layout.queue_db), cfg.store, cfg.queue)
        self.locations = Locations(self.layout, cfg.store)
        self.outbox = Outbox(str(self.layout.outbox_db), cfg.store)
        self.running: dict[str, Running] = {}
        self.drained_polls = 0  # polls that found the box draining and claimed nothing
        self.log = structlog.get_logger("fieldbox.worker")

    def run(self) -> None:
        """Run until the stop event is set; then release running jobs and close."""
        threads = [
            threading.Thread(target=self._job_thread, name=f"job-{n}", daemon=True)
            for n in range(self.cfg.worker.concurrency)
        ]
        for thread in threads:
            thread.start()
        self.log.info("worker_started", worker=self.id, threads=len(threads))
        # The overview reads this file: written now, not one heartbeat later, so a worker
        # that has just started is shown as up rather than down.
        self._heartbeat()
        shown = self._status_line()
        sdnotify.ready(shown)
        self._main_loop(shown)
        sdnotify.stopping(f"releasing {len(self.running)} running jobs")
        for item in list(self.running.values()):
            item.stop.set()
        deadline = time.monotonic() + _STOP_GRACE_S
        for thread in reversed(threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            # Their leases expire and another worker resumes the jobs at their last stage.
            self.log.warning("worker_stop_slow", running=list(self.running))
        remove_status(self.layout, self.id)
        self.outbox.close()
        self.locations.close()
        self.queue.close()
        self.log.info("worker_stopped", worker=self.id)

    def _main_loop(self, shown: str) -> None:
        # Heartbeats and watchdog pings come from this one loop: if it hangs (a stuck
        # database, a frozen process) the pings stop and systemd restarts the worker.
        beat_s = self.cfg.worker.heartbeat_s
        tick = min(beat_s, sdnotify.ping_every_s(beat_s) or beat_s)
        next_beat = time.monotonic() + beat_s
        while not self.stop.wait(tick):
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat_s
                self._heartbeat()
            sdnotify.watchdog_ping()
            line = self._status_line()
            if line != shown:
                shown = line
                sdnotify.status(line)

    def _status_line(self) -> str:
        jobs = ", ".join(f"{r.job.kind} {r.job.id}" for r in list(self.running.values()))
        state = "draining" if is_draining(self.layout) else "claiming"
        return f"{state}; running: {jobs or 'nothing'}"

    def _heartbeat(self) -> None:
        for item in list(self.running.values()):
            try:
                if not self.queue.heartbeat(item.job.id, self.id):
                    item.stop.set()  # cancel requested, or the lease went to another worker
            except StoreError as exc:
                self.log.warning("heartbeat_failed", job_id=item.job.id, error=repr(exc))
        write_status(
            self.layout,
            self.id,
            {
                "pid": os.getpid(),
                "concurrency": self.cfg.worker.concurrency,
                "kinds": self.cfg.worker.kinds,
                "draining": is_draining(self.layout),
                "drained_polls": self.drained_polls,
                "running": [
                    {
                        "job_id": r.job.id,
                        "kind": r.job.kind,
                        "stage": r.stage,
                        "fraction": r.fraction,
                    }
                    for r in self.running.values()
                ],
                "gpu": gpu_status() if self.running else None,
            },
        )

    def _job_thread(self) -> None:
        while not self.stop.is_set():
            if is_draining(self.layout):
                self.drained_polls += 1
                self.stop.wait(self.cfg.worker.poll_s)
                continue
            try:
                job = self.queue.claim(self.id, self.cfg.worker.kinds)
            except StoreError as exc:
                self.log.warning("claim_failed", error=repr(exc))
                job = None
            if job is None:
                self.stop.wait(self.cfg.worker.poll_s)
                continue
            if is_draining(self.layout):
                # The flag went up between the check and the claim: `fieldbox drain --wait`
                # may already have looked at the queue, so give the job straight back.
                self._give_back(job)
                continue
            self._run(job)

    def _give_back(self, job: Job) -> None:
        try:
            self.queue.release(job.id, self.id)
            self.log.info("job_released", job_id=job.id, reason="draining")
        except StoreError as exc:
            self.log.warning("job_release_failed", job_id=job.id, error=repr(exc))

    def _run(self, job: Job) -> None:
        item = Running(job)
        self.running[job.id] = item
        log = self.log.bind(job_id=job.id, kind=job.kind, attempt=job.attempts)
        log.info("job_started")
        try:
            result = execute(
                job, self.cfg, self.layout, self.locations, self.outbox, self._reporter(item)
            )
            self.queue.succeed(job.id, self.id, result)
            shutil.rmtree(self.layout.job_dir(job.id), ignore_errors=True)
            log.info("job_succeeded", result=result)
        except Cancelled:
            self._interrupted(job, log)
        except (InvalidInput, Unavailable) as exc:
            # Retrying cannot help: bad input, or a package or model this box does not have.
            self._fail(job, log, str(exc), retryable=False)
        except OutOfMemory as exc:
            self._fail(job, log, f"out of memory: {exc}", retryable=True)
        except Conflict as exc:
            log.warning("job_lease_lost", error=str(exc))
        except Exception as exc:  # a job's failure must never take the worker down
            log.exception("job_error")
            self._fail(job, log, f"{type(exc).__name__}: {exc}", retryable=True)
        finally:
            self.running.pop(job.id, None)

    def _interrupted(self, job: Job, log: Any) -> None:
        try:
            current = self.queue.get(job.id)
            if current.cancel_requested:
                self.queue.cancelled(job.id, self.id)
                log.info("job_cancelled")
            elif self.stop.is_set() and current.lease_owner == self.id:
                self.queue.release(job.id, self.id)
                log.info("job_released")
            else:
                log.warning("job_lease_lost")
        except StoreError as exc:
            log.warning("job_interrupt_bookkeeping_failed", error=repr(exc))

    def _fail(self, job: Job, log: Any, error: str, *, retryable: bool) -> None:
        try:
            after = self.queue.fail(job.id, self.id, error[:2000], retryable=retryable)
            log.warning("job_failed", error=error[:500], status=after.status)
        except StoreError as exc:
            log.warning("job_fail_bookkeeping_failed", error=repr(exc))

    def _reporter(self, item: Running) -> Reporter:
        def check() -> None:
            if item.stop.is_set() or self.stop.is_set():
                raise Cancelled("job interrupted")

        def on_stage(stage: str, event: str, info: dict[str, Any]) -> None:
            check()
            item.stage, item.fraction = stage, 0.0 if event == "started" else 1.0
            kind = "stage_started" if event == "started" else "stage_done"
            self.queue.progress(item.job.id, self.id, stage, item.fraction, kind, info)
            reached(f"{stage}:{event}")  # test-only pause point

        def on_progress(stage: str, fraction: float) -> None:
            check()
            reached_fraction(stage, fraction)  # test-only pause point
            item.stage, item.fraction = stage, fraction
            now = time.monotonic()
            if now - item.last_report >= _PROGRESS_EVERY_S:
                item.last_report = now
                self.queue.progress(item.job.id, self.id, stage, fraction)

        return Reporter(on_stage=on_stage, on_progress=on_progress)
