"""Job-queue claim throughput: claim + succeed per second, N worker processes next to one.

Each run enqueues `n_jobs` into a fresh queue.db (WAL, synchronous=FULL) in a temp dir,
starts the worker processes, releases them together and times until the queue is drained.
One process is the baseline; the table shows medians of alternating repeats and the ratio.
Importable: `measure_claims(n_jobs, processes)` returns jobs/s for one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from store.config import StoreConfig  # noqa: E402
from store.queue import Queue, QueueConfig  # noqa: E402

CFG = QueueConfig(max_queued=1_000_000, lease_s=60.0, backoff_s=[0.0])


def _worker(db: str, worker_id: str, start: Barrier) -> None:
    """Claim and succeed jobs until none is left."""
    q = Queue(db, StoreConfig(), CFG)
    try:
        start.wait()
        while (job := q.claim(worker_id)) is not None:
            q.succeed(job.id, worker_id, {"ok": True})
    finally:
        q.close()


def measure_claims(n_jobs: int, processes: int) -> float:
    """Jobs per second claimed and succeeded by `processes` worker processes on `n_jobs` jobs."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        db = str(Path(tmp) / "queue.db")
        q = Queue(db, StoreConfig(), CFG)
        try:
            for i in range(n_jobs):
                q.enqueue("bench", {"i": i})
            start = ctx.Barrier(processes + 1)
            procs = [
                ctx.Process(target=_worker, args=(db, f"w{i}", start)) for i in range(processes)
            ]
            for p in procs:
                p.start()
            start.wait()  # every worker has opened the queue
            began = time.perf_counter()
            for p in procs:
                p.join()
            elapsed = time.perf_counter() - began
            if any(p.exitcode != 0 for p in procs):
                raise RuntimeError("a bench worker failed")
            done = q.counts()["succeeded"]
            if done != n_jobs:
                raise RuntimeError(f"only {done} of {n_jobs} jobs succeeded")
        finally:
            q.close()
    return n_jobs / elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    base: list[float] = []
    many: list[float] = []
    for _ in range(args.repeats):  # alternate, so drift hits both sides alike
        base.append(measure_claims(args.jobs, 1))
        many.append(measure_claims(args.jobs, args.processes))
    b, m = statistics.median(base), statistics.median(many)
    print(f"queue claim+succeed, {args.jobs} jobs, median of {args.repeats}")
    print(f"{'workers':>8} {'jobs/s':>10}")
    print(f"{1:>8} {b:>10.0f}   (baseline)")
    print(f"{args.processes:>8} {m:>10.0f}")
    print(f"ratio {args.processes}/1: {m / b:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
