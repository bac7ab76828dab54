"""The durable job queue: jobs and their events in one SQLite file, safe across processes.

Every state change and the event that records it commit in one write transaction
(BEGIN IMMEDIATE), so SQLite's write lock serialises claims across processes and a
crash never leaves a job changed without its event, or the other way round.
"""

from __future__ import annotations

import builtins
import json
import math
import secrets
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from store.config import StoreConfig
from store.db import Database
from store.errors import Conflict, InvalidDocument, InvalidName, QueueFull
from store.queue_schema import (
    JOB_COLUMNS,
    PROGRESS_EVENTS,
    QUEUE_MIGRATIONS,
    STATUSES,
    TERMINAL,
    Job,
    JobEvent,
    JobStatus,
    QueueConfig,
    add_event,
    backoff,
    encode_json,
    event_from_row,
    held_job,
    job_from_row,
    load_job,
)

__all__ = [
    "TERMINAL",
    "Job",
    "JobEvent",
    "JobStatus",
    "Queue",
    "QueueConfig",
    "QueueFull",
]

_CLEAR_LEASE = "lease_owner = NULL, lease_expires = NULL"


class Queue:
    """The job queue over queue.db: enqueue, claim with a lease, report, finish, retry."""

    def __init__(self, path: str, store_cfg: StoreConfig, cfg: QueueConfig) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.db = Database(path, store_cfg, QUEUE_MIGRATIONS)

    def close(self) -> None:
        """Close the database connections."""
        self.db.close()

    # -- producers ---------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        location: str | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> tuple[Job, bool]:
        """Add a job; (job, created). A known idempotency key returns its job, created=False."""
        if not isinstance(kind, str) or not 1 <= len(kind) <= 100:
            raise InvalidName(f"invalid job kind {kind!r}: 1-100 characters")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
            raise InvalidName("idempotency key must be 1-255 characters")
        attempts = self.cfg.max_attempts if max_attempts is None else max_attempts
        if not isinstance(attempts, int) or attempts < 1:
            raise InvalidDocument(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise InvalidDocument(f"priority must be an integer, got {priority!r}")
        body = encode_json("payload", payload)
        with self.db.write() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT id FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    return load_job(conn, row[0]), False
            queued = int(
                conn.execute("SELECT count(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
            )
            now = time.time()
            if queued >= self.cfg.max_queued:
                raise QueueFull(
                    f"the job queue is full ({queued} queued jobs)", self._retry_after(conn, now)
                )
            job_id = "job_" + secrets.token_hex(8)
            conn.execute(
                f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES "
                "(?, ?, ?, ?, 'queued', ?, 0, ?, ?, NULL, NULL, 0, NULL, 0, NULL, ?, '{}', ?, ?, "
                "NULL)",
                (job_id, kind, body, location, priority, attempts, now, idempotency_key, now, now),
            )
            add_event(conn, job_id, "queued", {"kind": kind, "priority": priority}, now)
            return load_job(conn, job_id), True

    def _retry_after(self, conn: sqlite3.Connection, now: float) -> int:
        """Seconds until a queue slot is likely free, from the last minute's finishing rate."""
        done = int(
            conn.execute(
                "SELECT count(*) FROM jobs WHERE finished_at >= ?", (now - 60.0,)
            ).fetchone()[0]
        )
        if done == 0:
            return max(1, min(300, math.ceil(self.cfg.lease_s)))
        return max(1, min(60, math.ceil(60.0 / done)))

    # -- workers -----------------------------------------------------------------------

    def claim(self, worker_id: str, kinds: Sequence[str] | None = None) -> Job | None:
        """Take the highest-priority, oldest runnable job (after reclaiming expired leases)."""
        if kinds is not None and not kinds:
            return None
        kind_sql, kind_args = "", tuple[str, ...]()
        if kinds is not None:
            kind_sql = f" AND kind IN ({', '.join('?' * len(kinds))})"
            kind_args = tuple(kinds)
        pick = (
            "SELECT id FROM jobs WHERE status = 'queued' AND run_after <= ?"
            f"{kind_sql} ORDER BY priority DESC, created_at, rowid LIMIT 1"
        )
        now = time.time()
        # Idle pollers only read: no write lock is taken unless there is work or a lost lease.
        reader = self.db.read()
        if (
            reader.execute(pick, (now, *kind_args)).fetchone() is None
            and reader.execute(
                "SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires < ? LIMIT 1",
                (now,),
            ).fetchone()
            is None
        ):
            return None
        with self.db.write() as conn:
            now = time.time()
            self._reclaim_expired(conn, now)
            row = conn.execute(pick, (now, *kind_args)).fetchone()
            if row is None:
                return None
            job_id = row[0]
            conn.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?, "
                "lease_expires = ?, cancel_requested = 0, updated_at = ? WHERE id = ?",
                (worker_id, now + self.cfg.lease_s, now, job_id),
            )
            job = load_job(conn, job_id)
            add_event(conn, job_id, "started", {"worker": worker_id, "attempt": job.attempts}, now)
            return job

    def _reclaim_expired(self, conn: sqlite3.Connection, now: float) -> None:
        """Put back running jobs whose lease ran out: each counts as a failed attempt."""
        rows = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND lease_expires < ?",
            (now,),
        ).fetchall()
        for job in map(job_from_row, rows):
            info = {"worker": job.lease_owner, "attempt": job.attempts}
            add_event(conn, job.id, "lease_expired", info, now)
            error = f"lease expired (worker {job.lease_owner} stopped heartbeating)"
            self._settle_failure(conn, job, error, retryable=True, now=now)

    def _settle_failure(
        self, conn: sqlite3.Connection, job: Job, error: str, *, retryable: bool, now: float
    ) -> None:
        """Move a running job on after a failed attempt: retry, dead, failed or cancelled."""
        if job.cancel_requested:
            self._finish(conn, job.id, "cancelled", now, error=error)
            add_event(conn, job.id, "cancelled", {"error": error}, now)
        elif not retryable:
            self._finish(conn, job.id, "failed", now, error=error)
            add_event(conn, job.id, "failed", {"error": error, "attempt": job.attempts}, now)
        elif job.attempts >= job.max_attempts:
            self._finish(conn, job.id, "dead", now, error=error)
            add_event(conn, job.id, "dead", {"error": error, "attempt": job.attempts}, now)
        else:
            run_after = now + backoff(self.cfg, job.attempts)
            conn.execute(
                f"UPDATE jobs SET status = 'queued', {_CLEAR_LEASE}, run_after = ?, error = ?, "
                "updated_at = ? WHERE id = ?",
                (run_after, error, now, job.id),
            )
            data = {"error": error, "attempt": job.attempts, "run_after": run_after}
            add_event(conn, job.id, "retrying", data, now)

    @staticmethod
    def _finish(
        conn: sqlite3.Connection, job_id: str, status: JobStatus, now: float, **fields: Any
    ) -> None:
        sets = "".join(f", {name} = ?" for name in fields)
        conn.execute(
            f"UPDATE jobs SET status = ?, {_CLEAR_LEASE}, finished_at = ?, updated_at = ?{sets} "
            "WHERE id = ?",
            (status, now, now, *fields.values(), job_id),
        )

    def heartbeat(self, job_id: str, worker_id: str) -> bool:
        """Renew the lease; False when this worker lost it or a cancel was requested (stop)."""
        with self.db.write() as conn:
            now = time.time()
            cur = conn.execute(
                "UPDATE jobs SET lease_expires = ?, updated_at = ? "
                "WHERE id = ? AND status = 'running' AND lease_owner = ? "
                "RETURNING cancel_requested",
                (now + self.cfg.lease_s, now, job_id, worker_id),
            )
            row = cur.fetchone()
            return row is not None and not row[0]

    def progress(
        self,
        job_id: str,
        worker_id: str,
        stage: str,
        fraction: float,
        event: str = "progress",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Record the stage and fraction done, and append a progress/stage event."""
        if event not in PROGRESS_EVENTS:
            raise InvalidName(f"progress event must be one of {sorted(PROGRESS_EVENTS)}")
        fraction = min(1.0, max(0.0, float(fraction)))
        extra = json.loads(encode_json("event data", data or {}))
        with self.db.write() as conn:
            held_job(conn, job_id, worker_id)
            now = time.time()
            conn.execute(
                "UPDATE jobs SET stage = ?, fraction = ?, updated_at = ? WHERE id = ?",
                (stage, fraction, now, job_id),
            )
            add_event(conn, job_id, event, {**extra, "stage": stage, "fraction": fraction}, now)

    def succeed(self, job_id: str, worker_id: str, result: dict[str, Any]) -> Job:
        """Finish a held job successfully with `result`."""
        body = encode_json("result", result)
        with self.db.write() as conn:
            job = held_job(conn, job_id, worker_id)
            now = time.time()
            self._finish(conn, job_id, "succeeded", now, result=body, fraction=1.0, error=None)
            add_event(conn, job_id, "succeeded", {"attempt": job.attempts, "result": result}, now)
            return load_job(conn, job_id)

    def fail(self, job_id: str, worker_id: str, error: str, *, retryable: bool = True) -> Job:
        """Record a failed attempt: retry after a backoff, dead when exhausted, or failed."""
        with self.db.write() as conn:
            job = held_job(conn, job_id, worker_id)
            self._settle_failure(
                conn, job, str(error)[:10_000], retryable=retryable, now=time.time()
            )
            return load_job(conn, job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or ask a running job's worker to stop; terminal: as is."""
        with self.db.write() as conn:
            job = load_job(conn, job_id)
            now = time.time()
            if job.status == "queued":
                self._finish(conn, job_id, "cancelled", now)
                add_event(conn, job_id, "cancelled", {"by": "request"}, now)
            elif job.status == "running" and not job.cancel_requested:
                conn.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
                add_event(conn, job_id, "cancel_requested", {"worker": job.lease_owner}, now)
            else:
                return job
            return load_job(conn, job_id)

    def cancelled(self, job_id: str, worker_id: str) -> Job:
        """The worker acknowledges a cancel request: the job is cancelled."""
        with self.db.write() as conn:
            job = load_job(conn, job_id)
            if job.status == "cancelled":
                return job
            held_job(conn, job_id, worker_id)
            now = time.time()
            self._finish(conn, job_id, "cancelled", now)
            add_event(conn, job_id, "cancelled", {"worker": worker_id}, now)
            return load_job(conn, job_id)

    def release(self, job_id: str, worker_id: str) -> Job:
        """Give a held job back (graceful shutdown): queued now, this attempt not counted."""
        with self.db.write() as conn:
            job = held_job(conn, job_id, worker_id)
            now = time.time()
            if job.cancel_requested:
                self._finish(conn, job_id, "cancelled", now)
                add_event(conn, job_id, "cancelled", {"worker": worker_id}, now)
            else:
                conn.execute(
                    f"UPDATE jobs SET status = 'queued', {_CLEAR_LEASE}, run_after = ?, "
                    "attempts = max(attempts - 1, 0), updated_at = ? WHERE id = ?",
                    (now, now, job_id),
                )
                add_event(conn, job_id, "released", {"worker": worker_id}, now)
            return load_job(conn, job_id)

    # -- operators ---------------------------------------------------------------------

    def retry(self, job_id: str) -> Job:
        """Requeue a failed, dead or cancelled job by hand with a fresh attempt count."""
        with self.db.write() as conn:
            job = load_job(conn, job_id)
            if job.status not in ("failed", "dead", "cancelled"):
                raise Conflict(
                    f"job {job_id} is {job.status}; only failed, dead or cancelled "
                    "jobs can be retried"
                )
            now = time.time()
            conn.execute(
                f"UPDATE jobs SET status = 'queued', {_CLEAR_LEASE}, attempts = 0, run_after = ?, "
                "cancel_requested = 0, stage = NULL, fraction = 0, error = NULL, result = '{}', "
                "finished_at = NULL, updated_at = ? WHERE id = ?",
                (now, now, job_id),
            )
            data = {"by": "hand", "previous_status": job.status, "error": job.error}
            add_event(conn, job_id, "queued", data, now)
            return load_job(conn, job_id)

    def get(self, job_id: str) -> Job:
        """One job; NotFound if there is none."""
        return load_job(self.db.read(), job_id)

    def list(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        location: str | None = None,
        limit: int = 100,
        before: float | None = None,
    ) -> list[Job]:
        """Jobs matching the filters, newest first (`before`: created_at strictly earlier)."""
        if status is not None and status not in STATUSES:
            raise InvalidName(f"invalid job status {status!r}: one of {', '.join(STATUSES)}")
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("status", status), ("kind", kind), ("location", location)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if before is not None:
            where.append("created_at < ?")
            args.append(before)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        args.append(max(1, min(int(limit), 1000)))
        rows = (
            self.db.read()
            .execute(
                f"SELECT {JOB_COLUMNS} FROM jobs{clause} "
                "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                args,
            )
            .fetchall()
        )
        return [job_from_row(r) for r in rows]

    def events(self, job_id: str, after_seq: int = 0, limit: int = 1000) -> builtins.list[JobEvent]:
        """A job's events with seq > `after_seq`, oldest first."""
        rows = (
            self.db.read()
            .execute(
                "SELECT seq, job_id, type, data, at FROM events WHERE job_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (job_id, int(after_seq), max(1, min(int(limit), 10_000))),
            )
            .fetchall()
        )
        return [event_from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs in each status (every status present, zeros included)."""
        rows = self.db.read().execute("SELECT status, count(*) FROM jobs GROUP BY status")
        out = dict.fromkeys(STATUSES, 0)
        out.update({str(s): int(n) for s, n in rows})
        return out
