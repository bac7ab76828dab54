"""Routing as a user of a real gateway process sees it: fallback, the breaker, backpressure,
isolation of slow backends, readiness and metrics, against a controllable fake upstream.

Every backend has its own fake upstream (a path prefix of one fake process), so the tests
of this module do not share breaker or queue state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.inference.upstreams import (
    FakeUpstream,
    Gateway,
    Json,
    remote_backend,
    start_gateway,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT_BODY: Json = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
COOLDOWN_S = 2  # long enough that "skipped while open" is checked well inside the window
# Backends on the fake upstream: (name, type); each serves the model `m-{name}`.
FAKE_BACKENDS = [
    ("b", "openai"),
    ("f500", "openai"),
    ("refuse", "openai"),
    ("die", "openai"),
    ("oldie", "ollama"),
    ("brk", "openai"),
    ("slow", "openai"),
    ("met", "openai"),
    ("bad", "openai"),
    ("auth401", "openai"),
    ("auth403", "openai"),
    ("reuse", "openai"),
]


@dataclass
class Routing:
    """This module's fake upstream and gateway."""

    fake: FakeUpstream
    gateway: Gateway

    def openai(self) -> openai.OpenAI:
        """The official client on the gateway, no retries (a 429 must show)."""
        return openai.OpenAI(
            base_url=self.gateway.url + "/v1", api_key=self.gateway.token, max_retries=0, timeout=30
        )

    def ollama(self) -> ollama.Client:
        """The official Ollama client on the gateway."""
        return ollama.Client(host=self.gateway.url, headers=self.gateway.headers, timeout=30)

    def chat(self, model: str, **extra: object) -> httpx.Response:
        """POST /v1/chat/completions with the key."""
        return httpx.post(
            self.gateway.url + "/v1/chat/completions",
            json={**CHAT_BODY, "model": model, **extra},
            headers=self.gateway.headers,
            timeout=30,
        )

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of the gateway's /metrics: (name, labels) → value."""
        text = httpx.get(self.gateway.url + "/metrics", timeout=10).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def _config(fake: FakeUpstream) -> str:
    dead_port = free_port()  # nothing listens there: connections are refused
    tables = []
    for name, kind in FAKE_BACKENDS:
        url = fake.base(name) if kind == "ollama" else fake.v1(name)
        tables.append(remote_backend(kind, name, url, [f"m-{name}"]))
    tables.append(
        remote_backend(
            "openai",
            "tight",
            fake.v1("tight"),
            ["m-tight"],
            max_concurrency=1,
            max_queue=1,
            queue_timeout_s=30,
        )
    )
    for name, kind in (("cut", "openai"), ("ocut", "ollama")):
        url = fake.base(name) if kind == "ollama" else fake.v1(name)
        tables.append(
            remote_backend(kind, name, url, [f"m-{name}"], max_concurrency=1, max_queue=0)
        )
    tables.append(remote_backend("openai", "dead", f"http://127.0.0.1:{dead_port}/v1", ["m-dead"]))
    return (
        "".join(tables)
        + f"""
[inference]
health_interval_s = 0.2
breaker_failures = 2
breaker_cooldown_s = {COOLDOWN_S}

[inference.aliases]
fb500 = ["m-f500", "m-b"]
fbrefuse = ["m-refuse", "m-b"]
fbdead = ["m-dead", "m-b"]
fbdie = ["m-die", "m-b"]
fboldie = ["m-oldie", "m-b"]
fbbrk = ["m-brk", "m-b"]
metered = ["m-met"]
metered-bad = ["m-bad", "m-met"]
fbauth401 = ["m-auth401", "m-b"]
fbauth403 = ["m-auth403", "m-b"]
"""
    )


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routing]:
    """One fake upstream process and one gateway for the module."""
    root: Path = tmp_path_factory.mktemp("routing")
    fake = FakeUpstream(root).start()
    try:
        gateway = start_gateway(root / "gw", _config(fake))
        try:
            yield Routing(fake, gateway)
        finally:
            gateway.stop()
    finally:
        fake.stop()


def _content(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


# --- fallback -------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "first"), [("fb500", "f500"), ("fbrefuse", "refuse")])
def test_fallback_when_the_first_target_fails(routing: Routing, alias: str, first: str) -> None:
    """The first target answers 500 (or drops the connection): the answer comes from the
    second, whole and streamed; the first was really asked each time."""
    mode = "fail500" if first == "f500" else "refuse"
    routing.fake.control(first, mode=mode)
    reply = routing.openai().chat.completions.create(model=alias, messages=HELLO)
    assert reply.choices[0].message.content == "hello from b"
    assert routing.fake.count(first) == 1
    stream = routing.openai().chat.completions.create(model=alias, messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "hello from b"
    )
    assert routing.fake.count(first) == 2


def test_fallback_when_nothing_listens(routing: Routing) -> None:
    """A backend whose server is gone shows unhealthy; its alias answers from the next one,
    and asking for it alone gets a 503 with Retry-After, not a hang."""
    dead = routing.gateway.backends()["dead"]
    assert dead["healthy"] is False
    assert "unreachable" in dead["detail"]
    assert _content(routing.chat("fbdead")) == "hello from b"
    resp = routing.chat("m-dead")
    assert resp.status_code == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert "m-dead" in resp.json()["error"]["message"]


def test_failure_mid_stream_ends_with_an_error_event(routing: Routing) -> None:
    """The upstream dies after the first piece: no fallback (bytes went out); the OpenAI
    stream ends with a `data: {"error": ...}` event and no [DONE]; the client raises."""
    routing.fake.control("die", mode="die_mid_stream")
    before_b = routing.fake.count("b")
    got: list[str] = []
    with pytest.raises(openai.APIError) as err:
        stream = routing.openai().chat.completions.create(
            model="fbdie", messages=HELLO, stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["hello"]
    assert "die" in err.value.message

    events: list[str] = []
    with httpx.stream(
        "POST",
        routing.gateway.url + "/v1/chat/completions",
        json={**CHAT_BODY, "model": "fbdie", "stream": True},
        headers=routing.gateway.headers,
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        events = [line[5:].strip() for line in resp.iter_lines() if line.startswith("data:")]
    assert "[DONE]" not in events
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "hello"
    last = json.loads(events[-1])
    assert set(last) == {"error"}
    assert last["error"]["message"]
    assert routing.fake.count("die") == 2
    assert routing.fake.count("b") == before_b  # never fell back after bytes went out


def test_failure_mid_stream_in_the_ollama_dialect(routing: Routing) -> None:
    """An Ollama upstream dies mid-stream: the Ollama client sees the first piece, then an
    `{"error": ...}` line makes it raise; the OpenAI client on the same raises too."""
    routing.fake.control("oldie", mode="die_mid_stream")
    got: list[str] = []
    with pytest.raises(ollama.ResponseError):
        for part in routing.ollama().chat(
            model="fboldie", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            got.append(part.message.content or "")
    assert "".join(got) == "hello"
    with pytest.raises(openai.APIError):
        for _ in routing.openai().chat.completions.create(
            model="fboldie", messages=HELLO, stream=True
        ):
            pass
    assert routing.fake.count("oldie") == 2


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_rejecting_the_boxs_key_is_not_the_callers_error(
    routing: Routing, status: int
) -> None:
    """The first target's upstream refuses the box's own credentials (401/403): that is the
    backend's fault, not the caller's, whose valid key must not be answered with a 401/403
    (the openai client would raise AuthenticationError as for a bad key of its own). The
    next target answers; asked alone, the backend is a 502."""
    name = f"auth{status}"
    routing.fake.control(name, mode="fail", status=status)
    resp = routing.chat(f"fb{name}")
    assert _content(resp) == "hello from b"
    assert routing.fake.count(name) == 1
    alone = routing.chat(f"m-{name}")
    assert alone.status_code == 502, alone.text
    assert str(status) in alone.json()["error"]["message"]


# --- the circuit breaker --------------------------------------------------------------


def test_breaker_skips_a_failing_backend_then_tries_it_again(routing: Routing) -> None:
    """After `breaker_failures` failures the backend is skipped without being called; after
    the cooldown one trial call goes to it, and its success closes the breaker."""
    routing.fake.control("brk", mode="fail500")
    for _ in range(2):
        assert _content(routing.chat("fbbrk")) == "hello from b"
    assert routing.fake.count("brk") == 2
    assert routing.gateway.backends()["brk"]["breaker"] == "open"
    for _ in range(3):
        assert _content(routing.chat("fbbrk")) == "hello from b"
    assert routing.fake.count("brk") == 2  # skipped: not called at all
    routing.fake.control("brk", mode="ok")
    wait_until(
        lambda: routing.gateway.backends()["brk"]["breaker"] == "half-open",
        "the breaker's cooldown to end",
        timeout=COOLDOWN_S + 15,
    )
    assert _content(routing.chat("fbbrk")) == "hello from brk"
    assert routing.fake.count("brk") == 3
    assert routing.gateway.backends()["brk"]["breaker"] == "closed"


# --- backpressure ---------------------------------------------------------------------


def test_saturated_backend_answers_429_with_retry_after(routing: Routing) -> None:
    """max_concurrency=1, max_queue=1: one call runs, one waits, the rest get 429 at once
    with Retry-After (both dialects); queue depth shows in /metrics; the held calls finish."""
    fake, gw = routing.fake, routing.gateway
    fake.control("tight", mode="hold")
    with ThreadPoolExecutor(2) as pool:
        try:
            first: Future[httpx.Response] = pool.submit(routing.chat, "m-tight")
            wait_until(lambda: fake.count("tight") == 1, "the first call to reach the upstream")
            second: Future[httpx.Response] = pool.submit(routing.chat, "m-tight")
            wait_until(lambda: gw.backends()["tight"]["waiting"] == 1, "the second call to queue")

            refused = routing.chat("m-tight")
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["type"] == "rate_limit_error"
            with pytest.raises(openai.RateLimitError) as err:
                routing.openai().chat.completions.create(model="m-tight", messages=HELLO)
            assert int(err.value.response.headers["retry-after"]) >= 1
            with pytest.raises(ollama.ResponseError) as oerr:
                routing.ollama().chat(
                    model="m-tight", messages=[{"role": "user", "content": "hi"}], stream=False
                )
            assert oerr.value.status_code == 429

            samples = routing.metrics()
            tight = frozenset({("backend", "tight")})
            assert samples[("fieldbox_gateway_queue_depth", tight)] == 1
            assert samples[("fieldbox_gateway_in_flight", tight)] == 1
            busy = frozenset({("reason", "busy")})
            assert samples[("fieldbox_gateway_rejected_total", busy)] >= 3
        finally:
            fake.control("tight", release=True)
        assert _content(first.result(timeout=30)) == "hello from tight"
        assert _content(second.result(timeout=30)) == "hello from tight"
    assert fake.count("tight") == 2  # the refused calls never reached the upstream


@pytest.mark.parametrize(("name", "path"), [("cut", "/v1/chat/completions"), ("ocut", "/api/chat")])
def test_client_gone_mid_stream_frees_the_backend(routing: Routing, name: str, path: str) -> None:
    """A client that hangs up mid-stream: the gateway stops reading the upstream (which sees
    its stream cut) and frees the backend's only slot, so the next call is served, not
    refused with a 429."""
    fake, gw = routing.fake, routing.gateway
    fake.control(name, mode="trickle", delay_s=0.02)
    body = {**CHAT_BODY, "model": f"m-{name}", "stream": True}
    with httpx.stream("POST", gw.url + path, json=body, headers=gw.headers, timeout=30) as resp:
        assert resp.status_code == 200
        got: list[str] = []
        for line in resp.iter_lines():
            if line.strip():
                got.append(line)
            if len(got) == 2:
                break  # two pieces in: hang up
    assert len(got) == 2
    wait_until(lambda: fake.received(name)["streams_cut"] == 1, "the upstream stream to be cut")
    wait_until(lambda: gw.backends()[name]["active"] == 0, "the backend's slot to be freed")
    fake.control(name, mode="ok")
    assert _content(routing.chat(f"m-{name}")) == f"hello from {name}"


def test_a_finished_stream_gives_its_upstream_connection_back(routing: Routing) -> None:
    """Streamed answers read to `[DONE]` leave their keep-alive connection for the next call:
    six streams in a row reach the upstream over one connection (a health probe taking it at
    the wrong moment may open a second), not six."""
    client = routing.openai()
    for _ in range(6):
        stream = client.chat.completions.create(model="m-reuse", messages=HELLO, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
            "hello from reuse"
        )
    ports = {r["port"] for r in routing.fake.received("reuse")["requests"]}
    assert None not in ports
    assert len(ports) <= 2, ports


# --- a slow or dead backend blocks nobody else ----------------------------------------


def test_slow_backend_blocks_nothing_else(routing: Routing) -> None:
    """While a call hangs on one backend: /health, /ready, /v1/models, /v1/backends and calls
    to another backend all answer (each with a timeout far shorter than the hang)."""
    fake, gw = routing.fake, routing.gateway
    fake.control("slow", mode="hold")
    with ThreadPoolExecutor(1) as pool:
        try:
            held = pool.submit(routing.chat, "m-slow")
            wait_until(lambda: fake.count("slow") == 1, "the slow call to reach its upstream")
            with httpx.Client(base_url=gw.url, headers=gw.headers, timeout=10) as client:
                assert client.get("/health").status_code == 200
                assert client.get("/ready").status_code == 200
                models = [m["id"] for m in client.get("/v1/models").json()["data"]]
                assert "m-slow" in models and "m-b" in models
                assert client.get("/v1/backends").json()["backends"]
                resp = client.post("/v1/chat/completions", json={**CHAT_BODY, "model": "m-b"})
                assert _content(resp) == "hello from b"
                assert client.get("/api/tags").status_code == 200
            assert not held.done()
        finally:
            fake.control("slow", release=True)
        assert _content(held.result(timeout=30)) == "hello from slow"


# --- readiness ------------------------------------------------------------------------


def _ready(gw: Gateway) -> int:
    return httpx.get(gw.url + "/ready", timeout=10).status_code


def test_ready_follows_backend_health(routing: Routing) -> None:
    """/ready is 200 while one backend is healthy (even with one dead), 503 with every
    backend down, and 200 again when one comes back."""
    fake, gw = routing.fake, routing.gateway
    names = [name for name, _ in FAKE_BACKENDS] + ["tight", "cut", "ocut"]
    assert _ready(gw) == 200
    try:
        for name in names:
            fake.control(name, healthy=False)
        wait_until(lambda: _ready(gw) == 503, "/ready to say 503")
        body = httpx.get(gw.url + "/ready", timeout=10).json()
        assert body["ok"] is False
        assert not any(body["backends"].values())
        fake.control("b", healthy=True)
        wait_until(lambda: _ready(gw) == 200, "/ready to say 200 again")
        assert httpx.get(gw.url + "/ready", timeout=10).json()["backends"]["b"] is True
    finally:
        for name in names:
            fake.control(name, healthy=True)
        wait_until(
            lambda: all(b["healthy"] for n, b in gw.backends().items() if n != "dead"),
            "every backend to be healthy again",
        )


# --- metrics --------------------------------------------------------------------------


def test_metrics_per_backend_and_alias(routing: Routing) -> None:
    """/metrics counts requests, errors, latency, time to first token, tokens in and out,
    queue depth and backend health, labelled by backend and by the name asked for."""
    client = routing.openai()
    client.chat.completions.create(model="metered", messages=HELLO)
    "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="metered", messages=HELLO, stream=True)
        if c.choices
    )
    routing.fake.control("bad", mode="fail500")
    reply = client.chat.completions.create(model="metered-bad", messages=HELLO)
    assert reply.choices[0].message.content == "hello from met"

    samples = routing.metrics()
    assert all(name.startswith(("fieldbox_gateway_", "fieldbox_http_")) for name, _ in samples)

    def value(name: str, **labels: str) -> float:
        return samples[(f"fieldbox_gateway_{name}", frozenset(labels.items()))]

    met = {"backend": "met", "alias": "metered"}
    assert value("requests_total", **met, endpoint="chat") == 2
    assert value("requests_total", backend="met", alias="metered-bad", endpoint="chat") == 1
    assert value("request_seconds_count", **met) == 2
    assert value("request_seconds_sum", **met) > 0
    assert value("time_to_first_token_seconds_count", **met) == 1
    assert value("tokens_total", **met, direction="in") == 10
    assert value("tokens_total", **met, direction="out") == 6
    assert value("errors_total", backend="bad", alias="metered-bad", reason="upstream") == 1
    assert value("queue_depth", backend="met") == 0
    assert value("in_flight", backend="met") == 0
    assert value("backend_up", backend="met") == 1
    assert value("backend_up", backend="dead") == 0
