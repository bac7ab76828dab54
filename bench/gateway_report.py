"""The gateway bench's results and how they are printed (tables, per-round lines)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from gateway_client import CHAT_PATH, percentile, post_bytes
from gateway_procs import HOST


@dataclass
class Settings:
    """What one run measures, and how much."""

    rounds: int
    seq_n: int
    ttft_n: int
    warmup_n: int
    wrk_s: float
    connections: int
    chunks: int
    tok_reps: int
    max_tokens: int
    n_threads: int
    max_concurrency: int
    slow_ms: float


@dataclass
class Side:
    """One path under test: where to send requests, and what it measured per round."""

    key: str
    port: int
    token: str
    pid: int = 0
    seq: list[list[float]] = field(default_factory=list)
    ttft: list[list[float]] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    slow_rps: list[float] = field(default_factory=list)
    stream_rps: list[float] = field(default_factory=list)
    stream_cpu_us: list[float] = field(default_factory=list)

    def request(self, body: bytes) -> bytes:
        """The prebuilt chat request for this path."""
        return post_bytes(HOST, self.port, CHAT_PATH, self.token, body)


@dataclass
class Tokens:
    """Decode tokens/s per rep, direct and through the gateway, and the token counts."""

    direct: list[float] = field(default_factory=list)
    gateway: list[float] = field(default_factory=list)
    direct_e2e: list[float] = field(default_factory=list)
    gateway_e2e: list[float] = field(default_factory=list)
    counts: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Results:
    """Everything the tables are made of."""

    paths: list[Side]
    litellm_note: str
    tokens: Tokens | None
    tokens_note: str


# --- the tables ---------------------------------------------------------------------------

LABELS = {"direct": "direct", "bare": "bare proxy", "fieldbox": "fieldbox", "litellm": "LiteLLM"}


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _per_round(samples: list[list[float]], q: float) -> list[float]:
    return [percentile(r, q) * 1e3 for r in samples]


def _added(p: Side, d: Side, attr: str, q: float) -> list[float]:
    mine = _per_round(getattr(p, attr), q)
    base = _per_round(getattr(d, attr), q)
    return [a - b for a, b in zip(mine, base, strict=True)]


def tables(res: Results, s: Settings) -> str:
    """The measurement table, then the targets with PASS/MISS."""
    paths = {p.key: p for p in res.paths}
    d = paths["direct"]
    cols = [k for k in ("direct", "bare", "fieldbox", "litellm") if k in paths]
    note_ll = "" if "litellm" in paths else f"   (LiteLLM: {res.litellm_note})"
    w = 12
    lines = [
        f"{'ms unless noted, median of ' + str(s.rounds) + ' rounds':<44}"
        + "".join(f"{LABELS[k]:>{w}}" for k in cols)
        + note_ll
    ]

    def row(name: str, values: dict[str, str]) -> None:
        lines.append(f"{name:<44}" + "".join(f"{values.get(k, '-'):>{w}}" for k in cols))

    for attr, title, n in (
        ("seq", "chat completion, sequential", s.seq_n),
        ("ttft", "stream, time to first SSE event", s.ttft_n),
    ):
        lines.append(f"{title} ({n} per path per round)")
        for q in (50, 99):
            row(f"  p{q}", {k: f"{_med(_per_round(getattr(paths[k], attr), q)):.3f}" for k in cols})
        for q in (50, 99):
            row(
                f"  added p{q} (path - direct)",
                {k: f"{_med(_added(paths[k], d, attr, q)):+.3f}" for k in cols if k != "direct"},
            )
    lines.append(f"throughput, wrk {s.connections} connections, {s.wrk_s:g} s per run")
    row("  req/s", {k: f"{_med(paths[k].rps):.0f}" for k in cols})
    row(
        "  req/s ratio to direct",
        {k: f"{_med([a / b for a, b in zip(paths[k].rps, d.rps, strict=True)]):.3f}" for k in cols},
    )
    row("  server CPU per request (us)", {k: f"{_med(paths[k].cpu_us):.0f}" for k in cols})
    lines.append(f"  streamed ({s.chunks} content chunks + role and usage chunks)")
    row("    req/s", {k: f"{_med(paths[k].stream_rps):.0f}" for k in cols})
    row("    server CPU per request (us)", {k: f"{_med(paths[k].stream_cpu_us):.0f}" for k in cols})
    lines.append(f"  the same, upstream answering after {s.slow_ms:g} ms")
    row("    req/s", {k: f"{_med(paths[k].slow_rps):.0f}" for k in cols})
    row(
        "    req/s ratio to direct",
        {
            k: f"{_med([a / b for a, b in zip(paths[k].slow_rps, d.slow_rps, strict=True)]):.3f}"
            for k in cols
        },
    )

    tok = res.tokens
    if tok is not None:
        ratio = _med([g / x for g, x in zip(tok.gateway, tok.direct, strict=True)])
        e2e = _med([g / x for g, x in zip(tok.gateway_e2e, tok.direct_e2e, strict=True)])
        lines.append(
            f"tokens/s, SmolLM2-135M Q4_1, llama.cpp n_threads={s.n_threads}, "
            f"{s.max_tokens} max tokens, {s.tok_reps} reps"
        )
        lines.append(f"{'':<44}{'llama.cpp':>{w}}{'fieldbox':>{w}}{'ratio':>{w}}")
        lines.append(
            f"{'  decode tokens/s (first to last token)':<44}{_med(tok.direct):>{w}.1f}"
            f"{_med(tok.gateway):>{w}.1f}{ratio:>{w}.3f}"
        )
        lines.append(
            f"{'  end-to-end tokens/s (from the call)':<44}{_med(tok.direct_e2e):>{w}.1f}"
            f"{_med(tok.gateway_e2e):>{w}.1f}{e2e:>{w}.3f}"
        )
    else:
        lines.append(f"tokens/s: {res.tokens_note}")

    lines.append("")
    lines.append(f"{'target':<52}{'measured':>12}   {'goal':<10}verdict")

    def target(name: str, value: float | None, goal: str, ok: bool | None, fmt: str) -> None:
        shown = fmt.format(value) if value is not None else "-"
        verdict = "NOT RUN" if ok is None else ("PASS" if ok else "MISS")
        lines.append(f"{name:<52}{shown:>12}   {goal:<10}{verdict}")

    fb_added = _med(_added(paths["fieldbox"], d, "seq", 50))
    target("fieldbox added p50 latency (ms)", fb_added, "<= 1 ms", fb_added <= 1.0, "{:+.3f}")
    if "litellm" in paths:
        ratios = [
            f / ll
            for f, ll in zip(
                _added(paths["fieldbox"], d, "seq", 50),
                _added(paths["litellm"], d, "seq", 50),
                strict=True,
            )
            if ll > 0
        ]
        lr = _med(ratios)
        target("fieldbox added p50 / LiteLLM added p50", lr, "<= 0.25", lr <= 0.25, "{:.3f}")
    else:
        target(f"fieldbox / LiteLLM added p50 ({res.litellm_note})", None, "<= 0.25", None, "")
    # Issue 15 withdrew ">= 0.70 of direct" against the 12 us fake; these replace it.
    cpu = _med(paths["fieldbox"].cpu_us)
    target("fieldbox CPU per request, non-stream (us)", cpu, "<= 250", cpu <= 250, "{:.0f}")
    scpu = _med(paths["fieldbox"].stream_cpu_us)
    target("fieldbox CPU per request, stream (us)", scpu, "<= 250", scpu <= 250, "{:.0f}")
    sr = _med([a / b for a, b in zip(paths["fieldbox"].slow_rps, d.slow_rps, strict=True)])
    target("fieldbox req/s / direct, 20 ms upstream, 32 conns", sr, ">= 0.95", sr >= 0.95, "{:.3f}")
    # What a pass-through with no logic on the same stack keeps of that upstream (docs/
    # performance.md: the proposed replacement for the 0.95-of-direct goal).
    b = paths["bare"]
    fr = _med([a / c for a, c in zip(paths["fieldbox"].slow_rps, b.slow_rps, strict=True)])
    target("fieldbox req/s / bare proxy, 20 ms upstream", fr, ">= 1.0", fr >= 1.0, "{:.3f}")
    if tok is not None:
        kr = _med([g / x for g, x in zip(tok.gateway, tok.direct, strict=True)])
        target("gateway tokens/s / llama.cpp direct tokens/s", kr, ">= 0.98", kr >= 0.98, "{:.3f}")
    else:
        target(f"gateway / llama.cpp tokens/s ({res.tokens_note})", None, ">= 0.98", None, "")
    return "\n".join(lines)


def per_round(res: Results) -> str:
    """The per-round figures under the tables, for judging the spread."""
    out: list[str] = []
    for p in res.paths:
        seq = " ".join(f"{x:.3f}" for x in _per_round(p.seq, 50))
        ttft = " ".join(f"{x:.3f}" for x in _per_round(p.ttft, 50))
        rps = " ".join(f"{x:.0f}" for x in p.rps)
        slow = " ".join(f"{x:.0f}" for x in p.slow_rps)
        scpu = " ".join(f"{x:.0f}" for x in p.stream_cpu_us)
        out.append(
            f"  {LABELS[p.key]:<11} seq p50 ms [{seq}]  ttft p50 ms [{ttft}]  req/s [{rps}]"
            f"  stream CPU us [{scpu}]  slow req/s [{slow}]"
        )
    tok = res.tokens
    if tok is not None:
        pairs = ", ".join(
            f"{x:.1f}/{g:.1f} ({g / x:.3f}; {c[0]}/{c[1]} tok)"
            for x, g, c in zip(tok.direct, tok.gateway, tok.counts, strict=True)
        )
        out.append(f"  tokens/s direct/gateway per rep: {pairs}")
        if any(a != b for a, b in tok.counts):
            out.append("  warning: the two sides produced different token counts")
    return "\n".join(out)
