"""Field API benchmarks: fieldbox next to a raw baseline on the same disk, as ratios.

1. CAS writes/s: 8 HTTP writers doing If-Match PUTs against a real `fieldbox serve api`,
   next to a raw sqlite3 commit loop (WAL, synchronous=FULL) on the same filesystem.
2. tus ingest MB/s: one upload (POST + PATCHes) through the real server, next to a raw
   loopback TCP copy into an fsynced file by a separate process.

Each pair runs alternately, repeated; the table shows medians. Exit 0 even when a target is
missed (this is a measurement); non-zero on errors, such as a non-2xx from the server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from baselines import RawSink, raw_sqlite_writes
from benchlib import ROOT, ApiServer, BenchError, machine_facts, stop_process
from workloads import (
    LOCATION,
    MB,
    MIB,
    Settings,
    cas_writes,
    document_body,
    sink_upload,
    store_cas_writes,
    tus_upload,
)

BARE_COMMAND = [
    sys.executable,
    str(Path(__file__).with_name("bare_apps.py")),
    "{host}",
    "{port}",
    "{dir}",
]


@dataclass
class Row:
    """One benchmark: its samples on both sides, and the ratio it should reach."""

    name: str
    base_label: str
    fb_label: str
    target: float
    fmt: str
    base: list[float] = field(default_factory=list)
    fb: list[float] = field(default_factory=list)

    def medians(self) -> tuple[float, float, float]:
        """(baseline median, fieldbox median, median of the per-rep ratios).

        Each rep's pair runs back to back, so its ratio sees one disk state; the median
        of those paired ratios is steadier than a ratio of medians on a noisy machine.
        """
        b, f = statistics.median(self.base), statistics.median(self.fb)
        ratios = [fb / base for base, fb in zip(self.base, self.fb, strict=True) if base]
        return b, f, (statistics.median(ratios) if ratios else 0.0)


def settle(seconds: float) -> None:
    """Flush dirty pages and pause, so each timed run starts from the same disk state."""
    os.sync()
    time.sleep(seconds)


def alternate(
    reps: int, base: Callable[[int], float], fb: Callable[[int], float], row: Row, pause: float
) -> None:
    """Run baseline and fieldbox `reps` times, swapping which goes first each time."""
    for rep in range(reps):
        order = [(base, row.base), (fb, row.fb)]
        for fn, out in order if rep % 2 == 0 else order[::-1]:
            settle(pause)
            out.append(fn(rep))


def run(s: Settings, run_dir: Path, log: Callable[[str], None]) -> list[Row]:
    """Start the processes, run both benchmarks, return the rows; stops what it started."""
    server = ApiServer(run_dir / "fieldbox")
    bare = ApiServer(run_dir / "bare", command=BARE_COMMAND)
    base_dir = run_dir / "baseline"
    base_dir.mkdir(parents=True)
    sink: RawSink | None = None
    try:
        server.data_dir.mkdir(parents=True)
        server.create_key()
        server.start()
        server.create_location(LOCATION)
        log(f"api server pid {server.proc.pid if server.proc else '?'} on port {server.port}")

        body = document_body(s.body_bytes, 0)
        cas = Row(f"CAS writes/s ({s.writers} w)", "raw sqlite", "http", 0.50, "{:.0f}")

        def raw_cas(rep: int) -> float:
            value = raw_sqlite_writes(
                base_dir / f"raw-{rep}.db",
                body,
                keys=s.writers,
                warmup=s.warmup_s,
                duration=s.duration_s,
            )
            log(f"  rep {rep + 1}: raw sqlite {value:8.0f} commits/s")
            return value

        def fb_cas(rep: int) -> float:
            value = cas_writes(server, f"r{rep}", body, s)
            log(f"  rep {rep + 1}: fieldbox   {value:8.0f} CAS writes/s")
            return value

        log(f"CAS writes: {s.writers} writers, {len(body)}-byte documents, {s.duration_s:g}s each")
        alternate(s.reps, raw_cas, fb_cas, cas, s.settle_s)

        # Reference row (no target): the same CAS in-process, no HTTP, no batching.
        store_row = Row(f"  store ({s.writers} t)", "raw sqlite", "store", 0.0, "{:.0f}")

        def fb_store(rep: int) -> float:
            value = store_cas_writes(run_dir / f"store-{rep}", body, s)
            log(f"  rep {rep + 1}: store      {value:8.0f} CAS writes/s (in-process)")
            return value

        alternate(s.reps, raw_cas, fb_store, store_row, s.settle_s)

        # Reference row: the same PUT load on Litestar + uvicorn with an empty handler, the
        # ceiling any CAS endpoint on this stack can reach here.
        bare.start()
        bare_row = Row(f"  empty PUT ({s.writers} w)", "raw sqlite", "bare", 0.0, "{:.0f}")

        def fb_bare(rep: int) -> float:
            value = cas_writes(bare, f"r{rep}", body, s, prefix="/doc", verify=False)
            log(f"  rep {rep + 1}: bare app   {value:8.0f} PUT/s (no storage)")
            return value

        alternate(s.reps, raw_cas, fb_bare, bare_row, s.settle_s)

        size = s.upload_mib * MIB
        data = bytearray(os.urandom(size))
        sink = RawSink(base_dir / "sink")
        tus = Row("tus ingest MB/s", "raw tcp", "tus", 0.0, "{:.0f}")  # ceiling: issue 15

        def stamp(rep: int) -> bytes:
            data[:8] = struct.pack(">Q", rep)  # a new blob each rep: no dedup shortcut
            return bytes(data)

        def raw_tus(rep: int) -> float:
            assert sink is not None
            value = size / sink.copy(stamp(rep)) / MB
            log(f"  rep {rep + 1}: raw tcp  {value:8.0f} MB/s")
            return value

        def fb_tus(rep: int) -> float:
            value = size / tus_upload(server, stamp(rep), s.chunk_mib * MIB, f"b{rep}.bin") / MB
            log(f"  rep {rep + 1}: tus      {value:8.0f} MB/s")
            return value

        log(f"tus ingest: {s.upload_mib} MiB in {s.chunk_mib} MiB PATCHes")
        alternate(s.reps, raw_tus, fb_tus, tus, s.settle_s)

        # Reference row: the same PATCHes into an fsynced file through the same stack,
        # with no hashing and no protocol: the ceiling of any upload endpoint here.
        sink_row = Row("  bare sink MB/s", "raw tcp", "bare", 0.0, "{:.0f}")

        def fb_sink(rep: int) -> float:
            seconds = sink_upload(bare, stamp(rep), s.chunk_mib * MIB, f"s{rep}")
            value = size / seconds / MB
            log(f"  rep {rep + 1}: bare sink {value:8.0f} MB/s (uvicorn, fsync, no hashing)")
            return value

        alternate(s.reps, raw_tus, fb_sink, sink_row, s.settle_s)
        return [cas, store_row, bare_row, tus, sink_row]
    except BenchError:
        tail = server.log_tail()
        if tail:
            log(f"last lines of {server.log_path}:\n{tail}")
        raise
    finally:
        if sink is not None:
            stop_process(sink.proc)
        bare.stop()
        server.stop()


def table(rows: list[Row]) -> str:
    """The side-by-side table: baseline, fieldbox, median paired ratio, target, verdict."""
    lines = [
        f"{'benchmark':<21}{'baseline':<18}{'fieldbox':<18}{'ratio':>6}   target",
    ]
    for r in rows:
        b, f, ratio = r.medians()
        goal = f">= {r.target:.2f}  {'PASS' if ratio >= r.target else 'MISS'}"
        lines.append(
            f"{r.name:<21}{r.base_label + ' ' + r.fmt.format(b):<18}"
            f"{r.fb_label + ' ' + r.fmt.format(f):<18}{ratio:>6.2f}   "
            f"{goal if r.target else '(reference, no target)'}"
        )
    return "\n".join(lines)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the table; 0 on a completed measurement."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run: 1 rep, 2 s, 64 MiB")
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".bench-data", help="where data goes")
    ap.add_argument("--keep", action="store_true", help="keep the run's data dir afterwards")
    ap.add_argument("--reps", type=int, help="repetitions of each pair (default 5, quick 1)")
    ap.add_argument("--upload-mib", type=int, help="tus upload size (default 256, quick 64)")
    ap.add_argument("--chunk-mib", type=int, default=16, help="bytes per PATCH (default 16)")
    args = ap.parse_args(argv)
    s = Settings(
        reps=args.reps or (1 if args.quick else 5),
        writers=8,
        warmup_s=0.5 if args.quick else 1.0,
        duration_s=2.0 if args.quick else 5.0,
        upload_mib=args.upload_mib or (64 if args.quick else 256),
        chunk_mib=args.chunk_mib,
        body_bytes=256,
        settle_s=0.5 if args.quick else 1.0,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.data_dir))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        print("\n".join(machine_facts(run_dir)))
        print(f"settings   {json.dumps(s.__dict__)}", flush=True)
        rows = run(s, run_dir, log)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    print()
    print(table(rows))
    for r in rows:
        samples = ", ".join(
            f"{r.fmt.format(b)}/{r.fmt.format(f)} ({f / b if b else 0:.2f})"
            for b, f in zip(r.base, r.fb, strict=True)
        )
        print(f"  {r.name}: baseline/fieldbox per rep: {samples}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
