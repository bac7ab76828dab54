"""The job queue in one process: ordering, leases, retries, cancel, release, idempotency."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import store.queue as queue_mod
from store.config import StoreConfig
from store.errors import Conflict, InvalidDocument, InvalidName, NotFound, QueueFull
from store.paths import Layout
from store.queue import TERMINAL, Job, Queue, QueueConfig


class Clock:
    """A hand-driven stand-in for the `time` module inside store.queue."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def time(self) -> float:
        """The current fake time."""
        return self.t

    def advance(self, seconds: float) -> None:
        """Move the fake time forward."""
        self.t += seconds


CFG = QueueConfig(max_queued=50, lease_s=30.0, backoff_s=[10.0, 20.0], max_attempts=3)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freeze store.queue's clock; tests move it by hand."""
    c = Clock()
    monkeypatch.setattr(queue_mod, "time", c)
    return c


@pytest.fixture
def q(tmp_path: Path, clock: Clock) -> Iterator[Queue]:
    """A queue in a fresh data root, on the fake clock."""
    queue = Queue(str(Layout(tmp_path / "data").queue_db), StoreConfig(), CFG)
    try:
        yield queue
    finally:
        queue.close()


def _types(q: Queue, job_id: str) -> list[str]:
    return [e.type for e in q.events(job_id)]


def test_enqueue_get_and_events(q: Queue) -> None:
    """A new job is queued with defaults from the config and a 'queued' event."""
    job, created = q.enqueue("perception", {"video": "a.mp4"}, location="loc1", priority=2)
    assert created
    assert re.fullmatch(r"job_[0-9a-f]{16}", job.id)
    assert job.status == "queued" and job.attempts == 0 and job.max_attempts == 3
    assert job.payload == {"video": "a.mp4"} and job.location == "loc1" and job.priority == 2
    assert q.get(job.id) == job
    assert _types(q, job.id) == ["queued"]
    assert q.counts()["queued"] == 1 and q.counts()["dead"] == 0
    with pytest.raises(NotFound):
        q.get("job_0000000000000000")


def test_bad_input_is_refused(q: Queue) -> None:
    """Payloads that are not JSON objects, empty kinds and bad attempt counts are 4xx errors."""
    with pytest.raises(InvalidDocument):
        q.enqueue("k", {"x": object()})
    with pytest.raises(InvalidDocument):
        q.enqueue("k", {}, max_attempts=0)
    with pytest.raises(InvalidName):
        q.enqueue("", {})
    with pytest.raises(InvalidName):
        q.list(status="bogus")
    assert q.counts()["queued"] == 0


def test_idempotency_key_returns_the_same_job_even_when_finished(q: Queue) -> None:
    """A repeated idempotency key returns the first job, created=False."""
    first, created = q.enqueue("k", {"n": 1}, idempotency_key="upload-1")
    assert created
    job = q.claim("w1")
    assert job is not None and job.id == first.id
    q.succeed(job.id, "w1", {"ok": True})
    again, created = q.enqueue("k", {"n": 2}, idempotency_key="upload-1")
    assert not created
    assert again.id == first.id and again.status == "succeeded" and again.payload == {"n": 1}


def test_claim_order_kinds_and_run_after(q: Queue, clock: Clock) -> None:
    """Highest priority first, then oldest; kinds filter; nothing before run_after."""
    low, _ = q.enqueue("a", {})
    clock.advance(1)
    high, _ = q.enqueue("a", {}, priority=5)
    clock.advance(1)
    other, _ = q.enqueue("b", {})
    clock.advance(1)
    low2, _ = q.enqueue("a", {})
    assert q.claim("w", kinds=["b"]) == q.get(other.id)
    assert q.claim("w", kinds=[]) is None
    got = [q.claim("w") for _ in range(3)]
    assert [j.id for j in got if j] == [high.id, low.id, low2.id]
    assert q.claim("w") is None
    started = q.events(high.id)[-1]
    assert started.type == "started" and started.data == {"worker": "w", "attempt": 1}
    claimed = q.get(high.id)
    assert claimed.status == "running" and claimed.lease_owner == "w"
    assert claimed.lease_expires == started.at + CFG.lease_s


def test_backoff_then_dead(q: Queue, clock: Clock) -> None:
    """Retryable failures wait backoff_s[n] (last repeats); after max_attempts the job is dead."""
    job, _ = q.enqueue("k", {}, max_attempts=4)
    waits = []
    for attempt in range(1, 5):
        claimed = q.claim("w")
        assert claimed is not None and claimed.attempts == attempt
        after = q.fail(job.id, "w", f"boom {attempt}")
        last = q.events(job.id)[-1]
        if attempt < 4:
            assert after.status == "queued" and last.type == "retrying"
            assert last.data["attempt"] == attempt and last.data["error"] == f"boom {attempt}"
            assert after.run_after == last.data["run_after"]
            waits.append(after.run_after - last.at)
            assert q.claim("w") is None  # not before run_after
            clock.advance(after.run_after - clock.t)
        else:
            assert after.status == "dead" and last.type == "dead"
            assert after.error == "boom 4" and after.finished_at is not None
    assert waits == [10.0, 20.0, 20.0]


def test_not_retryable_fails_at_once(q: Queue) -> None:
    """fail(retryable=False) ends the job as failed on the first attempt."""
    job, _ = q.enqueue("k", {})
    assert q.claim("w") is not None
    failed = q.fail(job.id, "w", "bad input", retryable=False)
    assert failed.status == "failed" and failed.error == "bad input" and failed.attempts == 1
    assert failed.status in TERMINAL
    assert _types(q, job.id)[-1] == "failed"


def test_expired_lease_is_a_failed_attempt(q: Queue, clock: Clock) -> None:
    """A lease that runs out puts the job back (after backoff); the old holder loses it."""
    job, _ = q.enqueue("k", {})
    assert q.claim("w1") is not None
    clock.advance(CFG.lease_s + 1)
    assert q.claim("w2") is None  # reclaimed, but waiting out its backoff
    back = q.get(job.id)
    assert back.status == "queued" and back.lease_owner is None and back.attempts == 1
    assert _types(q, job.id)[-2:] == ["lease_expired", "retrying"]
    clock.advance(CFG.backoff_s[0])
    again = q.claim("w2")
    assert again is not None and again.id == job.id and again.attempts == 2
    assert not q.heartbeat(job.id, "w1")
    with pytest.raises(Conflict):
        q.succeed(job.id, "w1", {})
    with pytest.raises(Conflict):
        q.progress(job.id, "w1", "x", 0.5)
    assert q.succeed(job.id, "w2", {"n": 1}).result == {"n": 1}


def test_heartbeat_keeps_the_lease(q: Queue, clock: Clock) -> None:
    """Heartbeats renew the lease so a long job is not reclaimed."""
    job, _ = q.enqueue("k", {})
    assert q.claim("w1") is not None
    for _ in range(5):
        clock.advance(CFG.lease_s * 0.8)
        assert q.heartbeat(job.id, "w1")
    assert q.claim("w2") is None
    assert q.get(job.id).lease_owner == "w1"


def test_expired_lease_on_the_last_attempt_is_dead(q: Queue, clock: Clock) -> None:
    """When the lost attempt was the last one the job is dead."""
    job, _ = q.enqueue("k", {}, max_attempts=1)
    assert q.claim("w1") is not None
    clock.advance(CFG.lease_s + 1)
    assert q.claim("w2") is None
    dead = q.get(job.id)
    assert dead.status == "dead" and "lease expired" in (dead.error or "")
    assert _types(q, job.id)[-2:] == ["lease_expired", "dead"]


def test_progress_updates_stage_and_fraction(q: Queue) -> None:
    """progress() records the stage and fraction and appends the named event."""
    job, _ = q.enqueue("k", {})
    assert q.claim("w") is not None
    q.progress(job.id, "w", "frames", 0.0, event="stage_started")
    q.progress(job.id, "w", "frames", 0.4, data={"frames": 40})
    q.progress(job.id, "w", "frames", 1.0, event="stage_done")
    got = q.get(job.id)
    assert got.stage == "frames" and got.fraction == 1.0
    evs = q.events(job.id)
    assert [e.type for e in evs[-3:]] == ["stage_started", "progress", "stage_done"]
    assert evs[-2].data == {"frames": 40, "stage": "frames", "fraction": 0.4}
    with pytest.raises(InvalidName):
        q.progress(job.id, "w", "frames", 0.5, event="whatever")


def test_cancel_queued_running_and_terminal(q: Queue) -> None:
    """Queued: cancelled now. Running: requested, heartbeat False, worker acks. Terminal: as is."""
    queued, _ = q.enqueue("k", {})
    assert q.cancel(queued.id).status == "cancelled"
    assert q.claim("w") is None
    running, _ = q.enqueue("k", {})
    assert q.claim("w") is not None
    asked = q.cancel(running.id)
    assert asked.status == "running" and asked.cancel_requested
    assert not q.heartbeat(running.id, "w")
    assert q.cancel(running.id) == q.get(running.id)  # no second event
    done = q.cancelled(running.id, "w")
    assert done.status == "cancelled" and done.finished_at is not None
    assert _types(q, running.id)[-2:] == ["cancel_requested", "cancelled"]
    assert q.cancel(running.id) == done
    assert q.counts()["cancelled"] == 2


def test_release_does_not_count_the_attempt(q: Queue) -> None:
    """release() puts the job back at once with its attempt count restored."""
    job, _ = q.enqueue("k", {})
    assert q.claim("w1") is not None
    released = q.release(job.id, "w1")
    assert released.status == "queued" and released.attempts == 0
    assert released.lease_owner is None
    assert _types(q, job.id)[-1] == "released"
    again = q.claim("w2")
    assert again is not None and again.attempts == 1
    with pytest.raises(Conflict):
        q.release(job.id, "w1")


def test_retry_by_hand(q: Queue) -> None:
    """Dead/failed/cancelled jobs can be requeued by hand; others are a Conflict."""
    job, _ = q.enqueue("k", {}, max_attempts=1)
    assert q.claim("w") is not None
    assert q.fail(job.id, "w", "disk on fire").status == "dead"
    again = q.retry(job.id)
    assert again.status == "queued" and again.attempts == 0 and again.error is None
    last = q.events(job.id)[-1]
    assert last.type == "queued"
    assert last.data == {"by": "hand", "previous_status": "dead", "error": "disk on fire"}
    with pytest.raises(Conflict):
        q.retry(job.id)
    assert q.claim("w") is not None


def test_queue_full_has_retry_after(q: Queue) -> None:
    """Past max_queued, enqueue raises QueueFull with a positive retry_after; keys still dedupe."""
    first, _ = q.enqueue("k", {}, idempotency_key="first")
    for i in range(CFG.max_queued - 1):
        q.enqueue("k", {"i": i})
    with pytest.raises(QueueFull) as info:
        q.enqueue("k", {})
    assert info.value.retry_after >= 1
    assert q.enqueue("k", {}, idempotency_key="first") == (q.get(first.id), False)
    assert q.claim("w") is not None
    assert q.enqueue("k", {})[1]


def test_list_filters_and_pages(q: Queue, clock: Clock) -> None:
    """list() is newest first, filters by status/kind/location, pages with `before`."""
    made: list[Job] = []
    for i in range(6):
        clock.advance(1)
        made.append(q.enqueue("a" if i % 2 else "b", {}, location=f"loc{i % 3}")[0])
    assert [j.id for j in q.list()] == [j.id for j in reversed(made)]
    assert {j.kind for j in q.list(kind="a")} == {"a"} and len(q.list(kind="a")) == 3
    assert [j.id for j in q.list(location="loc0")] == [made[3].id, made[0].id]
    page = q.list(limit=2)
    rest = q.list(before=page[-1].created_at)
    assert [j.id for j in page + rest] == [j.id for j in reversed(made)]
    assert q.claim("w") is not None
    assert len(q.list(status="running")) == 1 and len(q.list(status="queued")) == 5


def test_event_seq_is_global_and_pages(q: Queue) -> None:
    """Event seqs increase across jobs; after_seq and limit page through one job's history."""
    a, _ = q.enqueue("k", {})
    b, _ = q.enqueue("k", {})
    assert q.claim("w") is not None
    q.progress(a.id, "w", "s", 0.5)
    evs = q.events(a.id)
    assert [e.type for e in evs] == ["queued", "started", "progress"]
    assert evs[0].seq < q.events(b.id)[0].seq < evs[1].seq < evs[2].seq
    assert q.events(a.id, after_seq=evs[0].seq, limit=1) == [evs[1]]


def test_state_survives_reopen(tmp_path: Path, clock: Clock) -> None:
    """Everything acknowledged is in queue.db after closing and reopening it."""
    path = str(tmp_path / "queue.db")
    q1 = Queue(path, StoreConfig(), CFG)
    job, _ = q1.enqueue("k", {"a": 1}, idempotency_key="x")
    assert q1.claim("w") is not None
    q1.progress(job.id, "w", "s", 0.3)
    q1.close()
    q2 = Queue(path, StoreConfig(), CFG)
    try:
        got = q2.get(job.id)
        assert got.status == "running" and got.stage == "s" and got.fraction == 0.3
        assert len(q2.events(job.id)) == 3
        assert q2.enqueue("k", {}, idempotency_key="x") == (got, False)
    finally:
        q2.close()


def test_config_section_decodes_and_rejects_unknown_fields() -> None:
    """[queue] decodes from TOML-shaped dicts with defaults; unknown keys are an error."""
    cfg = msgspec.convert({"lease_s": 5, "backoff_s": [1, 2, 3]}, QueueConfig)
    assert cfg.lease_s == 5.0 and cfg.backoff_s == [1.0, 2.0, 3.0] and cfg.max_queued == 5000
    assert QueueConfig().backoff_s == [15.0, 60.0]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"lease": 5}, QueueConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_attempts": 0}, QueueConfig)
