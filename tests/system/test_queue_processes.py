"""The job queue across OS processes: exclusive claims, lost leases, idempotency, backpressure.

The helper processes are this module run as `python -m tests.system.test_queue_processes
ROLE DB CONFIG_JSON ARGS...`; each prints JSON lines on stdout and reads commands from stdin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import pytest

from store.config import StoreConfig
from store.errors import QueueFull
from store.queue import Queue, QueueConfig

ROOT = Path(__file__).resolve().parents[2]
FAST = QueueConfig(max_queued=5000, lease_s=0.5, backoff_s=[0.0], max_attempts=3)
WAIT_S = 30.0  # upper bound on waiting for a helper; never part of an assertion


# -- helper processes ------------------------------------------------------------------


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _role(role: str, q: Queue, args: list[str]) -> None:
    """Run one helper role against an open queue."""
    me = f"{role}-{os.getpid()}"
    if role == "claim_all":  # wait for "go", then claim + succeed until the queue is empty
        sys.stdin.readline()
        ids: list[str] = []
        while (job := q.claim(me)) is not None:
            ids.append(job.id)
            q.succeed(job.id, me, {"by": me})
        _say(ids=ids)
    elif role == "hold":  # claim one job, report it, and keep it until killed
        job = _claim_patiently(q, me)
        _say(id=job.id, attempts=job.attempts, worker=me)
        time.sleep(3600)
    elif role == "hold_heartbeat":  # heartbeat until told to stop; ack the cancel; or release
        job = _claim_patiently(q, me)
        stop = {"flag": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
        _say(id=job.id, worker=me)
        while not stop["flag"] and q.heartbeat(job.id, me):
            time.sleep(0.02)
        done = q.release(job.id, me) if stop["flag"] else q.cancelled(job.id, me)
        _say(id=done.id, status=done.status, attempts=done.attempts)
    elif role == "claim_one":
        job = _claim_patiently(q, me)
        _say(id=job.id, attempts=job.attempts, worker=me)
    elif role == "enqueue":  # wait for "go", then enqueue N jobs (optionally with one key)
        count, key = int(args[0]), (args[1] or None)
        sys.stdin.readline()
        created, full, ids = 0, [], []
        for i in range(count):
            try:
                job, new = q.enqueue("k", {"i": i, "by": me}, idempotency_key=key)
            except QueueFull as exc:
                full.append(exc.retry_after)
                continue
            created += int(new)
            ids.append(job.id)
        _say(created=created, full=full, ids=ids)
    elif role == "progress":  # claim; N events; wait for a line; N more; succeed
        n = int(args[0])
        job = _claim_patiently(q, me)
        for half in ("first", "second"):
            for i in range(n):
                q.progress(job.id, me, half, i / n)
            if half == "first":
                _say(id=job.id, done=half)
                sys.stdin.readline()
        q.succeed(job.id, me, {"events": 2 * n})
        _say(id=job.id, done="all")
    else:
        raise SystemExit(f"unknown role {role!r}")


def _claim_patiently(q: Queue, me: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = q.claim(me)
        if job is not None:
            return job
        time.sleep(0.02)
    raise SystemExit("no job to claim")


def main(argv: list[str]) -> None:
    """Entry point of a helper process: ROLE DB CONFIG_JSON ARGS..."""
    role, db, cfg_json, *rest = argv
    q = Queue(db, StoreConfig(), msgspec.json.decode(cfg_json, type=QueueConfig))
    try:
        _role(role, q, rest)
    finally:
        q.close()


# -- the tests -------------------------------------------------------------------------


class Helper:
    """One helper process with line-wise JSON output."""

    def __init__(self, role: str, db: Path, cfg: QueueConfig, *args: str) -> None:
        cfg_json = msgspec.json.encode(cfg).decode()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.system.test_queue_processes",
                role,
                str(db),
                cfg_json,
                *args,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def send(self, line: str = "go") -> None:
        """Write one command line to the helper."""
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def read(self) -> dict[str, Any]:
        """The helper's next JSON line (fails with its stderr if it exited instead)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=WAIT_S)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"helper exited ({self.proc.returncode}): {err[-3000:]}")
        out: dict[str, Any] = json.loads(line)
        return out

    def finish(self) -> None:
        """Wait for a clean exit."""
        assert self.proc.wait(timeout=WAIT_S) == 0


@pytest.fixture
def helpers() -> Iterator[list[Helper]]:
    """Helpers started by a test; any still running at the end are killed."""
    started: list[Helper] = []
    yield started
    for h in started:
        if h.proc.poll() is None:
            h.proc.kill()
        h.proc.communicate(timeout=WAIT_S)


def _start(started: list[Helper], role: str, db: Path, cfg: QueueConfig, *args: str) -> Helper:
    h = Helper(role, db, cfg, *args)
    started.append(h)
    return h


def _open(db: Path, cfg: QueueConfig = FAST) -> Queue:
    return Queue(str(db), StoreConfig(), cfg)


def test_four_processes_claim_each_job_exactly_once(tmp_path: Path, helpers: list[Helper]) -> None:
    """200 jobs, 4 claimers released together: every job claimed and succeeded exactly once."""
    db = tmp_path / "queue.db"
    q = _open(db)
    jobs = {q.enqueue("k", {"i": i})[0].id for i in range(200)}
    procs = [_start(helpers, "claim_all", db, FAST) for _ in range(4)]
    for p in procs:
        p.send()
    claimed: list[str] = []
    for p in procs:
        claimed.extend(p.read()["ids"])
        p.finish()
    counts = Counter(claimed)
    assert not [j for j, c in counts.items() if c > 1], "a job was claimed twice"
    assert set(claimed) == jobs
    assert q.counts()["succeeded"] == 200
    assert all(len([e for e in q.events(j) if e.type == "started"]) == 1 for j in jobs)
    q.close()


def test_sigkilled_holder_loses_its_lease_then_the_job_dies(
    tmp_path: Path, helpers: list[Helper]
) -> None:
    """SIGKILL a holder: after its lease another process gets attempt 2; at max_attempts, dead."""
    db = tmp_path / "queue.db"
    cfg = QueueConfig(lease_s=0.5, backoff_s=[0.0], max_attempts=2)
    q = _open(db, cfg)
    job, _ = q.enqueue("k", {})
    holder = _start(helpers, "hold", db, cfg)
    first = holder.read()
    assert first == {"id": job.id, "attempts": 1, "worker": first["worker"]}
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait(timeout=WAIT_S)
    second = _start(helpers, "hold", db, cfg).read()
    assert second["id"] == job.id and second["attempts"] == 2
    expired = [e for e in q.events(job.id) if e.type == "lease_expired"]
    assert [e.data["worker"] for e in expired] == [first["worker"]]
    helpers[-1].proc.send_signal(signal.SIGKILL)
    helpers[-1].proc.wait(timeout=WAIT_S)
    time.sleep(cfg.lease_s + 0.1)  # a tiny lease wait; the next claim reclaims it as dead
    assert q.claim("reaper") is None
    dead = q.get(job.id)
    assert dead.status == "dead" and dead.attempts == 2
    assert [e.type for e in q.events(job.id)][-2:] == ["lease_expired", "dead"]
    again = q.retry(job.id)  # by hand, from yet another process
    assert again.status == "queued" and again.attempts == 0
    third = _start(helpers, "claim_one", db, cfg).read()
    assert third["id"] == job.id and third["attempts"] == 1
    q.close()


def test_idempotency_key_across_processes(tmp_path: Path, helpers: list[Helper]) -> None:
    """4 processes enqueue with the same key at once: one job, created exactly once."""
    db = tmp_path / "queue.db"
    _open(db).close()
    procs = [_start(helpers, "enqueue", db, FAST, "5", "same-key") for _ in range(4)]
    for p in procs:
        p.send()
    results = [p.read() for p in procs]
    assert sum(r["created"] for r in results) == 1
    assert len({i for r in results for i in r["ids"]}) == 1
    q = _open(db)
    assert q.counts()["queued"] == 1
    q.close()


def test_backpressure_across_processes(tmp_path: Path, helpers: list[Helper]) -> None:
    """max_queued holds across processes: the rest get QueueFull with a retry_after."""
    db = tmp_path / "queue.db"
    cfg = QueueConfig(max_queued=25, lease_s=0.5, backoff_s=[0.0])
    _open(db, cfg).close()
    procs = [_start(helpers, "enqueue", db, cfg, "10", "") for _ in range(4)]
    for p in procs:
        p.send()
    results = [p.read() for p in procs]
    assert sum(r["created"] for r in results) == 25
    full = [s for r in results for s in r["full"]]
    assert len(full) == 15 and min(full) >= 1
    q = _open(db, cfg)
    assert q.counts()["queued"] == 25
    q.close()


def test_events_readable_from_another_process_while_written(
    tmp_path: Path, helpers: list[Helper]
) -> None:
    """A reader sees committed progress events while the writer still runs, in seq order."""
    db = tmp_path / "queue.db"
    q = _open(db)
    job, _ = q.enqueue("k", {})
    writer = _start(helpers, "progress", db, FAST, "50")
    assert writer.read() == {"id": job.id, "done": "first"}
    mid = q.events(job.id)
    assert [e.type for e in mid] == ["queued", "started"] + ["progress"] * 50
    assert writer.proc.poll() is None and q.get(job.id).stage == "first"
    writer.send()
    assert writer.read() == {"id": job.id, "done": "all"}
    writer.finish()
    rest = q.events(job.id, after_seq=mid[-1].seq)
    assert [e.type for e in rest] == ["progress"] * 50 + ["succeeded"]
    seqs = [e.seq for e in mid + rest]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert q.get(job.id).status == "succeeded"
    q.close()


def test_cancel_running_job_in_another_process(tmp_path: Path, helpers: list[Helper]) -> None:
    """cancel() of a running job makes the worker's heartbeat False; it acknowledges."""
    db = tmp_path / "queue.db"
    q = _open(db)
    job, _ = q.enqueue("k", {})
    queued, _ = q.enqueue("k", {}, priority=-1)
    assert q.cancel(queued.id).status == "cancelled"
    worker = _start(helpers, "hold_heartbeat", db, FAST)
    assert worker.read()["id"] == job.id
    assert q.cancel(job.id).cancel_requested
    assert worker.read() == {"id": job.id, "status": "cancelled", "attempts": 1}
    worker.finish()
    assert [e.type for e in q.events(job.id)][-2:] == ["cancel_requested", "cancelled"]
    q.close()


def test_release_on_graceful_shutdown(tmp_path: Path, helpers: list[Helper]) -> None:
    """A worker told to stop (SIGTERM) releases its job: queued again, attempt not counted."""
    db = tmp_path / "queue.db"
    q = _open(db)
    job, _ = q.enqueue("k", {})
    worker = _start(helpers, "hold_heartbeat", db, FAST)
    assert worker.read()["id"] == job.id
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.read() == {"id": job.id, "status": "queued", "attempts": 0}
    worker.finish()
    again = q.claim("next")
    assert again is not None and again.id == job.id and again.attempts == 1
    q.close()


if __name__ == "__main__":
    main(sys.argv[1:])
