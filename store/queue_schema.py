"""The job queue's config section, records and SQLite schema (the logic is in store/queue.py)."""

from __future__ import annotations

import json
import sqlite3
from typing import Annotated, Any, Literal

import msgspec

from store.errors import Conflict, InvalidDocument, NotFound

JobStatus = Literal["queued", "running", "succeeded", "failed", "dead", "cancelled"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})
PROGRESS_EVENTS = frozenset({"progress", "stage_started", "stage_done"})


class QueueConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[queue]` config section: limits, leases and retries of the job queue."""

    max_queued: Annotated[int, msgspec.Meta(ge=1)] = 5000
    """Queued jobs past which enqueue is refused (QueueFull → 429 with Retry-After)."""

    lease_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """How long a running job stays claimed without a heartbeat; heartbeats renew it. A job
    whose lease runs out (its worker died) goes back to the queue as a failed attempt."""

    backoff_s: list[float] = msgspec.field(default_factory=lambda: [15.0, 60.0])
    """Wait before retry n after a failed attempt (the last value repeats for later ones)."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 3
    """Attempts (claims) a job gets before a retryable failure makes it dead."""


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One job as stored: what to do, its state, its lease and its progress."""

    id: str
    kind: str
    payload: dict[str, Any]
    location: str | None
    status: JobStatus
    priority: int
    attempts: int
    max_attempts: int
    run_after: float
    lease_owner: str | None
    lease_expires: float | None
    cancel_requested: bool
    stage: str | None
    fraction: float
    error: str | None
    idempotency_key: str | None
    result: dict[str, Any]
    created_at: float
    updated_at: float
    finished_at: float | None


class JobEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a job's history; `seq` is global and strictly increasing (an SSE id)."""

    seq: int
    job_id: str
    type: str
    data: dict[str, Any]
    at: float


QUEUE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL, location TEXT,
        status TEXT NOT NULL, priority INTEGER NOT NULL, attempts INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL, run_after REAL NOT NULL, lease_owner TEXT,
        lease_expires REAL, cancel_requested INTEGER NOT NULL DEFAULT 0, stage TEXT,
        fraction REAL NOT NULL DEFAULT 0, error TEXT, idempotency_key TEXT UNIQUE,
        result TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,
        updated_at REAL NOT NULL, finished_at REAL
    );
    CREATE INDEX jobs_claim ON jobs (priority DESC, created_at, run_after)
        WHERE status = 'queued';
    CREATE INDEX jobs_lease ON jobs (lease_expires) WHERE status = 'running';
    CREATE INDEX jobs_status ON jobs (status, created_at);
    CREATE INDEX jobs_kind ON jobs (kind, created_at);
    CREATE INDEX jobs_location ON jobs (location, created_at);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, type TEXT NOT NULL,
        data TEXT NOT NULL, at REAL NOT NULL
    );
    CREATE INDEX events_job ON events (job_id, seq)
    """,
)

JOB_COLUMNS = (
    "id, kind, payload, location, status, priority, attempts, max_attempts, run_after, "
    "lease_owner, lease_expires, cancel_requested, stage, fraction, error, idempotency_key, "
    "result, created_at, updated_at, finished_at"
)


def job_from_row(row: tuple[Any, ...]) -> Job:
    """A `SELECT {JOB_COLUMNS}` row → Job."""
    return Job(
        id=row[0],
        kind=row[1],
        payload=json.loads(row[2]),
        location=row[3],
        status=row[4],
        priority=row[5],
        attempts=row[6],
        max_attempts=row[7],
        run_after=row[8],
        lease_owner=row[9],
        lease_expires=row[10],
        cancel_requested=bool(row[11]),
        stage=row[12],
        fraction=row[13],
        error=row[14],
        idempotency_key=row[15],
        result=json.loads(row[16]),
        created_at=row[17],
        updated_at=row[18],
        finished_at=row[19],
    )


def event_from_row(row: tuple[Any, ...]) -> JobEvent:
    """A `SELECT seq, job_id, type, data, at` row → JobEvent."""
    return JobEvent(seq=row[0], job_id=row[1], type=row[2], data=json.loads(row[3]), at=row[4])


def backoff(cfg: QueueConfig, failed_attempts: int) -> float:
    """Seconds to wait before the retry that follows `failed_attempts` failures."""
    if not cfg.backoff_s:
        return 0.0
    return max(0.0, cfg.backoff_s[min(max(failed_attempts, 1), len(cfg.backoff_s)) - 1])


MAX_PAYLOAD_BYTES = 256 * 1024


def encode_json(what: str, value: dict[str, Any]) -> str:
    """`value` as compact JSON text; InvalidDocument if it is not a bounded JSON object."""
    if not isinstance(value, dict):
        raise InvalidDocument(f"job {what} must be a JSON object")
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidDocument(f"job {what} is not JSON-serialisable: {exc}") from exc
    if len(text) > MAX_PAYLOAD_BYTES:
        raise InvalidDocument(f"job {what} is larger than {MAX_PAYLOAD_BYTES} bytes")
    return text


def add_event(
    conn: sqlite3.Connection, job_id: str, kind: str, data: dict[str, Any], at: float
) -> None:
    """Append one event to a job's history (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO events (job_id, type, data, at) VALUES (?, ?, ?, ?)",
        (job_id, kind, json.dumps(data, separators=(",", ":"), default=str), at),
    )


def load_job(conn: sqlite3.Connection, job_id: str) -> Job:
    """One job read through `conn`; NotFound if there is none."""
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return job_from_row(row)


def held_job(conn: sqlite3.Connection, job_id: str, worker_id: str) -> Job:
    """The job, if `worker_id` holds its lease; Conflict otherwise."""
    job = load_job(conn, job_id)
    if job.status != "running" or job.lease_owner != worker_id:
        raise Conflict(
            f"job {job_id} is not held by worker {worker_id!r} "
            f"(status {job.status}, lease owner {job.lease_owner!r})"
        )
    return job
