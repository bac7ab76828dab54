"""The box under mixed load: N crew devices against a whole box, idle and with a splat job.

    .venv/bin/python bench/bench_mixed.py [--quick] [--keep DIR] [--no-fix-compare]

Starts a real box on free ports (bench/mixed_box.py: moto S3, api, gateway with the
embedded llama.cpp model, worker, bridge) and plays N = 1, 4, 16, 64 crew devices
(`--quick`: 1 and 16, short phases) from client processes of their own
(bench/mixed_crew.py): each device writes and reads its own CAS document, asks streamed
chat questions through the gateway (time to first token), and uploads with tus in 64 KiB
or 4 MiB PATCHes, every loop with a short pause, for a fixed window per phase.

Order: a warm-up (N=4, not counted: the box's one-time start costs, its first SQLite
opens, lazy imports and the model's first evaluation, would otherwise land in the first
measured window); every N idle (no job); then a default CPU splat job on the synthetic
room video, and once it trains, every N busy (bridge syncing the uploads to moto
meanwhile); then, alternating, N=16 with the worker's fix off (`[worker] nice = 0`) and
N=16 with it on again (`fix_pairs` times, 1: see main), each off window bracketed by on
windows; and, after the job is cancelled, N=16 idle again. A busy phase counts only if
the job was running in its train stage at both ends of the window, the worker used CPU
through it, and the bridge finished uploads inside the window; the table says so per
row, with the job's progress.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import BenchError, machine_facts
from gateway_client import percentile
from mixed_box import Box
from workloads import LOCATION

BENCH = Path(__file__).resolve().parent
CAS_P99_TARGET_MS = 50.0
TTFT_RATIO_TARGET = 2.0
STATUSES = ("200", "201", "204", "409", "412", "429", "503", "timeout", "error")
FIX_OFF = "[worker]\nnice = 0\n"
WARMUP_N = 4  # every loop (CAS, chat, both tus PATCH sizes) at a load the box clears


@dataclass
class Settings:
    """Phase length and the crew's pace."""

    ns: list[int]
    phase_s: float
    warmup_s: float
    fix_pairs: int
    chat_think_s: float = 10.0
    doc_think_s: float = 0.2
    upload_think_s: float = 2.0
    chat_tokens: int = 16
    small_upload: int = 1 << 20
    large_upload: int = 8 << 20
    api_timeout_s: float = 30.0
    # Past the gateway's own queue wait (`queue_timeout_s`, 30 s): a caller still waiting
    # then is a stall, not a queued call the gateway is about to refuse with a 429.
    chat_timeout_s: float = 45.0


@dataclass
class Result:
    """One phase: N devices, one condition, the merged figures."""

    n: int
    cond: str
    write_ms: list[float]
    read_ms: list[float]
    ttft_ms: list[float]
    upload_mb_s: float
    statuses: Counter[str]
    failures: list[str]
    failure_count: int
    bridge_sent: int
    cores: dict[str, float]
    valid: str = "ok"
    load: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(
    box: Box, s: Settings, n: int, cond: str, job_id: str | None, phase_s: float | None = None
) -> Result:
    """Run N devices for one window; check the job and the bridge around it."""
    if phase_s is not None:
        s = replace(s, phase_s=phase_s)
    box.check_alive()
    groups = min(4, n)
    # Time for the crew processes to start, create their documents and open their
    # connections (mixed_crew.PREOPEN_S before the window) before it opens.
    start_at = time.time() + 3.0 + n * 0.05
    tag = f"{cond}-{n}-{int(start_at)}"
    procs = []
    for g in range(groups):
        spec = {
            "api": box.api_addr,
            "gateway": box.gateway_addr,
            "token": box.token,
            "location": LOCATION,
            "devices": list(range(g, n, groups)),
            "tag": tag,
            "start_at": start_at,
            "duration_s": s.phase_s,
            "api_timeout_s": s.api_timeout_s,
            "chat_timeout_s": s.chat_timeout_s,
            "chat_tokens": s.chat_tokens,
            "chat_think_s": s.chat_think_s,
            "doc_think_s": s.doc_think_s,
            "upload_think_s": s.upload_think_s,
            "small_upload": s.small_upload,
            "large_upload": s.large_upload,
        }
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / "mixed_crew.py"), json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
    while time.time() < start_at:
        time.sleep(0.01)
    before_job = box.job(job_id) if job_id else None
    pids = box.pids()
    cpu0 = {name: cpu_s(pid) for name, pid in pids.items()}
    time.sleep(max(0.0, start_at + s.phase_s - time.time()))
    cores = {name: (cpu_s(pid) - cpu0[name]) / s.phase_s for name, pid in pids.items()}
    after_job = box.job(job_id) if job_id else None
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    merged: dict[str, Any] = {"write_ms": [], "read_ms": [], "ttft_ms": [], "upload_bytes": 0}
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    failure_count = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=s.phase_s + 180)
        if proc.returncode != 0 or not out.strip():
            raise BenchError(f"a crew process failed ({proc.returncode})")
        part = json.loads(out)
        for key in ("write_ms", "read_ms", "ttft_ms", "upload_bytes"):
            merged[key] += part[key]
        statuses.update(part["statuses"])
        failures += part["failures"]
        failure_count += part["failure_count"]
    sent, pending = box.outbox_done_between(start_at, start_at + s.phase_s)
    result = Result(
        n=n,
        cond=cond,
        write_ms=merged["write_ms"],
        read_ms=merged["read_ms"],
        ttft_ms=merged["ttft_ms"],
        upload_mb_s=merged["upload_bytes"] / s.phase_s / 1e6,
        statuses=statuses,
        failures=failures,
        failure_count=failure_count,
        bridge_sent=sent,
        cores=cores,
        load=load,
        extra={"outbox_pending": pending},
    )
    if job_id:
        result.valid = _busy_check(before_job, after_job, sent, cores.get("worker", 0.0))
    return result


def _busy_check(before: Any, after: Any, sent: int, worker_cores: float) -> str:
    """'ok', or why the window was not the busy box it should have been."""
    for label, job in (("start", before), ("end", after)):
        if job is None or job["status"] != "running" or job["stage"] != "train":
            state = f"{job['status']}/{job['stage']}" if job else "missing"
            return f"job not training at window {label} ({state})"
    if worker_cores < 0.05:
        return f"the worker used {worker_cores:.2f} cores: not training"
    if sent == 0:
        return "the bridge sent nothing in the window"
    # At niceness 10 the job gets only what the crew leaves idle: its progress can stall
    # between two progress reports while the worker still computes, hence the CPU check.
    return f"ok (train {before['fraction']:.1%}->{after['fraction']:.1%})"


def _pct(values: list[float], q: float) -> str:
    return f"{percentile(values, q):.1f}" if values else "-"


def print_table(results: list[Result]) -> None:
    """The per-phase table, then any failures seen."""
    head = (
        f"{'N':>3} {'condition':10} {'wr p50':>7} {'wr p99':>7} {'rd p50':>7} {'rd p99':>7} "
        f"{'ttft50':>7} {'ttft99':>7} {'MB/s':>6} "
        + " ".join(f"{k:>5}" for k in ("200", "201", "204", "409", "412", "429", "503"))
        + f" {'t/o':>4} {'err':>4} {'noRA':>4} {'s3':>4}  cores api/gw/wk/br  window"
    )
    print("\nms unless noted; wr/rd = CAS write/read, ttft = time to first token, s3 = objects")
    print("the bridge finished in the window, noRA = 429/503 without Retry-After")
    print(head)
    for r in results:
        c = r.statuses
        cores = "/".join(f"{r.cores.get(k, 0):.2f}" for k in ("api", "gateway", "worker", "bridge"))
        print(
            f"{r.n:>3} {r.cond:10} {_pct(r.write_ms, 50):>7} {_pct(r.write_ms, 99):>7} "
            f"{_pct(r.read_ms, 50):>7} {_pct(r.read_ms, 99):>7} {_pct(r.ttft_ms, 50):>7} "
            f"{_pct(r.ttft_ms, 99):>7} {r.upload_mb_s:>6.1f} "
            + " ".join(f"{c.get(k, 0):>5}" for k in ("200", "201", "204", "409", "412", "429"))
            + f" {c.get('503', 0):>5} {c.get('timeout', 0):>4} {c.get('error', 0):>4}"
            f" {c.get('no_retry_after', 0):>4} {r.bridge_sent:>4}  {cores:18} {r.valid}"
            f" [load {r.load}]"
        )
    for r in results:
        idle, closed = r.statuses.get("reconnect_idle", 0), r.statuses.get("reconnect_closed", 0)
        if idle or closed:
            print(
                f"  reconnects at N={r.n} {r.cond} (not errors: no request was on them): "
                f"{idle} after >= 4 s idle, {closed} closed by the api while idle"
            )
    for r in results:
        for line in r.failures[:5]:
            print(f"  failure at N={r.n} {r.cond}: {line}")
        if r.failure_count > 5:
            print(f"  ... {r.failure_count - 5} more at N={r.n} {r.cond}")


def _p99(results: list[Result], n: int, cond: str, key: str) -> float | None:
    values = [percentile(getattr(r, key), 99) for r in results if r.n == n and r.cond == cond]
    values = [v for v in values if v == v]
    return statistics.median(values) if values else None


def verdicts(results: list[Result]) -> None:
    """Busy/idle ratios per N, the fix's before/after, and the targets with PASS/MISS."""
    print("\nTTFT busy/idle (p50, p99):")
    for n in sorted({r.n for r in results}):
        idle = [r for r in results if r.n == n and r.cond == "idle" and r.ttft_ms]
        busy = [r for r in results if r.n == n and r.cond == "busy" and r.ttft_ms]
        if idle and busy:
            p50 = percentile(busy[0].ttft_ms, 50) / percentile(idle[0].ttft_ms, 50)
            p99 = percentile(busy[0].ttft_ms, 99) / percentile(idle[0].ttft_ms, 99)
            print(f"  N={n:<3} {p50:5.2f}x  {p99:5.2f}x")
    off = [r for r in results if r.cond == "busy-nofix"]
    on = [r for r in results if r.n == 16 and r.cond == "busy"]
    if off and len(on) > len(off):
        print(
            "\nworker fix at N=16 busy (nice 0 = off, default nice 10 = on), in run order "
            "on, off, on, ...; off/on = each off against the mean of the on runs either side:"
        )
        for key, name in (("write_ms", "CAS write p99"), ("ttft_ms", "TTFT p99")):
            off_v = [percentile(getattr(r, key), 99) for r in off]
            on_v = [percentile(getattr(r, key), 99) for r in on]
            ratios = ", ".join(
                f"{v / ((on_v[i] + on_v[i + 1]) / 2):.2f}" for i, v in enumerate(off_v)
            )
            print(
                f"  {name:14} off {' / '.join(f'{v:.1f}' for v in off_v)} ms   "
                f"on {' / '.join(f'{v:.1f}' for v in on_v)} ms   off/on {ratios}"
            )
    print("\ntargets")
    write99 = _p99(results, 16, "busy", "write_ms")
    ttft_busy = _p99(results, 16, "busy", "ttft_ms")
    ttft_idle = _p99(results, 16, "idle", "ttft_ms")
    if write99 is not None:
        ok = write99 <= CAS_P99_TARGET_MS
        print(f"  N=16 busy CAS write p99 {write99:.1f} ms <= 50 ms: {'PASS' if ok else 'MISS'}")
    if ttft_busy is not None and ttft_idle:
        ratio = ttft_busy / ttft_idle
        ok = ratio <= TTFT_RATIO_TARGET
        print(
            f"  N=16 busy TTFT p99 {ttft_busy:.0f} ms = {ratio:.2f}x idle {ttft_idle:.0f} ms "
            f"<= 2x: {'PASS' if ok else 'MISS'}"
        )
    bad = sum(r.statuses.get(k, 0) for r in results for k in ("timeout", "error"))
    bad += sum(r.statuses.get("no_retry_after", 0) for r in results)
    other = sum(r.failure_count for r in results)
    refused = sum(r.statuses.get(k, 0) for r in results for k in ("429", "503"))
    print(
        f"  no errors, no timeouts, every 429/503 with Retry-After: {bad} timeouts/errors/"
        f"no-Retry-After, {other} failures in all, {refused} refusals with Retry-After: "
        f"{'PASS' if bad == 0 and other == 0 else 'MISS'}"
    )
    stale = sum(r.statuses.get("reconnect_idle", 0) for r in results)
    closed = sum(r.statuses.get("reconnect_closed", 0) for r in results)
    print(
        f"  (api connections replaced before a request, not counted as errors: {stale} idle"
        f" >= 4 s, {closed} closed by the api while idle)"
    )
    for r in results:
        if r.cond.startswith("busy") and not r.valid.startswith("ok"):
            print(f"  N={r.n} {r.cond}: INVALID window: {r.valid}")


def run(s: Settings, run_dir: Path, fix_compare: bool) -> tuple[list[Result], Result]:
    """Every phase in order (see the module docstring); the results and the warm-up."""
    from perception.splat.synthetic import write_video

    box = Box(run_dir)
    results: list[Result] = []
    try:
        box.start()
        print("\n".join(machine_facts(box.data_dir)), flush=True)
        warmup = run_phase(box, s, WARMUP_N, "warm-up", None, s.warmup_s)
        print(f"\nwarm-up, N={WARMUP_N} for {s.warmup_s:g} s, not counted below:")
        print_table([warmup])
        for n in s.ns:
            results.append(run_phase(box, s, n, "idle", None))
            print_table(results[-1:])
        video = run_dir / "room.mp4"
        write_video(video, frames=180, fps=12)  # as bench_splat.py: 60 frames at 4 fps
        job_id = box.submit_splat(video)
        box.wait_training(job_id)
        for n in s.ns:
            results.append(run_phase(box, s, n, "busy", job_id))
            print_table(results[-1:])
        for _ in range(s.fix_pairs if fix_compare else 0):
            box.start_worker("nofix", FIX_OFF)
            box.wait_training(job_id)
            results.append(run_phase(box, s, 16, "busy-nofix", job_id))
            print_table(results[-1:])
            box.start_worker("box")
            box.wait_training(job_id)
            results.append(run_phase(box, s, 16, "busy", job_id))
            print_table(results[-1:])
        box.request("POST", f"/v1/jobs/{job_id}/cancel")
        deadline = time.monotonic() + 120
        while box.job(job_id)["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
        results.append(run_phase(box, s, 16, "idle", None))
        print_table(results[-1:])
    finally:
        box.stop()
    return results, warmup


def main(argv: list[str] | None = None) -> int:
    """Run the phases and print the table, ratios and verdicts."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 1 and 16, 10 s phases")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep its logs")
    parser.add_argument("--no-fix-compare", action="store_true", help="skip the nice=0 run")
    args = parser.parse_args(argv)
    if args.quick:
        s = Settings(ns=[1, 16], phase_s=10.0, warmup_s=5.0, fix_pairs=1)
    else:
        # One off/on pair only: each worker restart ends the job's attempt (its lease
        # expires), and a second pair used up max_attempts = 3: the job went dead.
        s = Settings(ns=[1, 4, 16, 64], phase_s=20.0, warmup_s=10.0, fix_pairs=1)
    started = time.monotonic()
    run_dir = args.keep or Path(tempfile.mkdtemp(prefix="bench-mixed-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        results, warmup = run(s, run_dir, not args.no_fix_compare)
    except BenchError as exc:
        print(f"bench_mixed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(run_dir, ignore_errors=True)
    print(
        f"\nthe box under mixed load ({time.monotonic() - started:.0f} s, {s.phase_s:g} s phases)"
    )
    print(f"\nwarm-up, N={WARMUP_N} for {s.warmup_s:g} s before the first row, not counted:")
    print_table([warmup])
    print_table(results)
    verdicts(results)
    invalid = [r for r in results if r.cond.startswith("busy") and not r.valid.startswith("ok")]
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
