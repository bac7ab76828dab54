"""Each backend type behind a real gateway process, driven by the official clients.

One fake-upstream process plays an `openai`, a `vllm` (two: `structured_outputs` and
`guided_json`), an `ollama` and an `mlx` server; a second real gateway on the embedded
llama.cpp model is the upstream of two more backends (`openai` at its `/v1`, `ollama` at its
root), so real tokens cross two gateways. The official `openai` and `ollama` clients are
used unchanged against the first gateway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.inference.upstreams import (
    FakeUpstream,
    Gateway,
    Json,
    remote_backend,
    start_gateway,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

HOP_KEY_ENV = "FIELDBOX_TEST_HOP_KEY"
UNSET_KEY_ENV = "FIELDBOX_TEST_KEY_NOBODY_SETS"
UPSTREAM_SECRET = "sk-upstream-secret-for-the-fake"
SCHEMA: Json = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["answer", "count"],
    "additionalProperties": False,
}
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
# (model name clients ask for, backend and fake upstream name, backend type)
FAKES = [
    ("oa-model", "oa", "openai"),
    ("vl-model", "vl", "vllm"),
    ("ol-model", "ol", "ollama"),
    ("mx-model", "mx", "mlx"),
]
FAKE_IDS = [kind for _, _, kind in FAKES]


@dataclass
class Stack:
    """The processes of this module."""

    fake: FakeUpstream
    gateway: Gateway
    second: Gateway


def _first_config(fake: FakeUpstream, second_url: str, key_file: Path) -> str:
    return (
        remote_backend("openai", "oa", fake.v1("oa"), ["oa-model"])
        + remote_backend("vllm", "vl", fake.v1("vl"), ["vl-model"])
        + remote_backend(
            "vllm", "vg", fake.v1("vg"), ["vg-model"], structured_output_param="guided_json"
        )
        + remote_backend("ollama", "ol", fake.base("ol"), ["ol-model"], keep_alive="7m")
        + remote_backend("mlx", "mx", fake.v1("mx"), ["mx-model"])
        + remote_backend(
            "openai", "keyed", fake.v1("keyed"), ["keyed-model"], api_key_file=str(key_file)
        )
        + remote_backend(
            "vllm", "nokey", fake.v1("nokey"), ["nokey-model"], api_key_env=UNSET_KEY_ENV
        )
        + remote_backend(
            "openai", "hop-openai", second_url + "/v1", ["via-openai"], api_key_env=HOP_KEY_ENV
        )
        + remote_backend(
            "ollama", "hop-ollama", second_url, ["via-ollama"], api_key_env=HOP_KEY_ENV
        )
        + """
[inference]
health_interval_s = 0.2

[inference.aliases]
mx-first = ["mx-model", "vl-model"]
mx-only = ["mx-model"]
"""
    )


_SECOND_CONFIG = """
[inference.aliases]
via-openai = ["smollm2-135m"]
via-ollama = ["smollm2-135m"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Fake upstream, the embedded-model gateway and the gateway under test, started at once."""
    root = tmp_path_factory.mktemp("backend-types")
    fake = FakeUpstream(root)
    started: list[FakeUpstream | Gateway] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            fake_started = pool.submit(fake.start)
            second_started = pool.submit(start_gateway, root / "second", _SECOND_CONFIG)
        # Both are done here; record what runs before re-raising a failed start.
        if fake_started.exception() is None:
            started.append(fake)
        if second_started.exception() is None:
            started.append(second_started.result())
        fake_started.result()
        second = second_started.result()
        key_file = root / "upstream.key"
        key_file.write_text(UPSTREAM_SECRET + "\n")
        os.environ.pop(UNSET_KEY_ENV, None)
        gateway = start_gateway(
            root / "first",
            _first_config(fake, second.url, key_file),
            env={HOP_KEY_ENV: second.token},
        )
        started.append(gateway)
        # The embedded model may still be loading: wait for the first gateway's probes.
        wait_until(
            lambda: all(b["healthy"] for n, b in gateway.backends().items() if n != "nokey"),
            "every backend of the first gateway to be healthy",
            timeout=60,
        )
        yield Stack(fake, gateway, second)
    finally:
        for process in reversed(started):
            process.stop()


def _openai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0, timeout=60)


def _ollama(gw: Gateway) -> ollama.Client:
    return ollama.Client(host=gw.url, headers=gw.headers, timeout=60)


# --- the OpenAI client against each fake backend type -------------------------------


@pytest.mark.parametrize(("model", "name", "kind"), FAKES, ids=FAKE_IDS)
def test_chat_reaches_each_backend_type(stack: Stack, model: str, name: str, kind: str) -> None:
    """A chat answer comes from the right upstream, asked in that upstream's own API."""
    reply = _openai(stack.gateway).chat.completions.create(
        model=model, messages=HELLO, max_tokens=7, temperature=0.5
    )
    assert reply.choices[0].message.content == f"hello from {name}"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    got = stack.fake.last(name)
    if kind == "ollama":
        assert got["path"] == "/api/chat"
        body = got["body"]
        assert body["model"] == model
        assert body["stream"] is False
        assert body["keep_alive"] == "7m"
        assert body["options"] == {"num_predict": 7, "temperature": 0.5}
        assert body["messages"] == [{"role": "user", "content": "Say hello."}]
    else:
        assert got["path"] == "/chat/completions"
        assert got["body"]["model"] == model
        assert got["body"]["max_tokens"] == 7
        assert got["body"]["messages"] == [{"role": "user", "content": "Say hello."}]


@pytest.mark.parametrize(("model", "name", "kind"), FAKES, ids=FAKE_IDS)
def test_stream_reaches_each_backend_type(stack: Stack, model: str, name: str, kind: str) -> None:
    """A streamed chat arrives piece by piece through the official client and ends cleanly."""
    stream = _openai(stack.gateway).chat.completions.create(
        model=model, messages=HELLO, max_tokens=7, stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta]
    text = [p for p in pieces if p]
    assert text == ["hello", " from", f" {name}"]
    got = stack.fake.last(name)
    assert got["body"]["stream"] is True
    assert got["path"] == ("/api/chat" if kind == "ollama" else "/chat/completions")


@pytest.mark.parametrize(("model", "name", "kind"), FAKES, ids=FAKE_IDS)
def test_text_completion_each_backend_type(stack: Stack, model: str, name: str, kind: str) -> None:
    """`/v1/completions`: Ollama gets a raw `/api/generate`, the others `/completions`."""
    client = _openai(stack.gateway)
    reply = client.completions.create(model=model, prompt="Once upon", max_tokens=4)
    assert reply.choices[0].text == f"hello from {name}"
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=model, prompt="Once upon", max_tokens=4, stream=True
        )
        if c.choices
    )
    assert streamed == f"hello from {name}"
    got = stack.fake.last(name)
    if kind == "ollama":
        assert got["path"] == "/api/generate"
        assert got["body"]["prompt"] == "Once upon"
        assert got["body"]["raw"] is True
        assert got["body"]["options"]["num_predict"] == 4
    else:
        assert got["path"] == "/completions"
        assert got["body"]["prompt"] == "Once upon"


@pytest.mark.parametrize(("model", "name", "kind"), FAKES[:3], ids=FAKE_IDS[:3])
def test_embeddings_each_capable_type(stack: Stack, model: str, name: str, kind: str) -> None:
    """Embeddings through the OpenAI client, as floats and with the client's default
    (base64); Ollama's come from its native `/api/embed`."""
    client = _openai(stack.gateway)
    expected = [[0.25, -0.5, 0.125], [1.25, -0.5, 0.125]]
    reply = client.embeddings.create(model=model, input=["one", "two"], encoding_format="float")
    assert [d.embedding for d in reply.data] == expected
    got = stack.fake.last(name)
    assert got["path"] == ("/api/embed" if kind == "ollama" else "/embeddings")
    assert got["body"]["input"] == ["one", "two"]
    default = client.embeddings.create(model=model, input=["one", "two"])
    assert [d.embedding for d in default.data] == expected


def test_mlx_cannot_embed_and_says_so(stack: Stack) -> None:
    """mlx has no embeddings: a 400 naming the problem, and mlx is never called."""
    before = stack.fake.count("mx")
    with pytest.raises(openai.BadRequestError) as err:
        _openai(stack.gateway).embeddings.create(model="mx-model", input="x")
    assert "embeddings" in str(err.value)
    assert stack.fake.count("mx") == before


def test_mlx_embeddings_go_to_the_next_capable_target(stack: Stack) -> None:
    """An alias [mlx, vllm]: embeddings skip mlx and come from vLLM."""
    before = stack.fake.count("mx")
    reply = _openai(stack.gateway).embeddings.create(
        model="mx-first", input="x", encoding_format="float"
    )
    assert reply.data[0].embedding == [0.25, -0.5, 0.125]
    assert stack.fake.last("vl")["path"] == "/embeddings"
    assert stack.fake.count("mx") == before


# --- structured output: each type gets the schema in its own parameter -------------


def _schema_format() -> Any:
    return {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": SCHEMA, "strict": True},
    }


def test_vllm_gets_structured_outputs(stack: Stack) -> None:
    """vLLM: `response_format` becomes `structured_outputs: {"json": schema}`."""
    reply = _openai(stack.gateway).chat.completions.create(
        model="vl-model", messages=HELLO, response_format=_schema_format()
    )
    assert json.loads(reply.choices[0].message.content or "") == {"answer": "from vl", "count": 1}
    body = stack.fake.last("vl")["body"]
    assert body["structured_outputs"] == {"json": SCHEMA}
    assert "response_format" not in body


def test_vllm_gets_guided_json_when_configured(stack: Stack) -> None:
    """vLLM with `structured_output_param = "guided_json"`: the older parameter."""
    reply = _openai(stack.gateway).chat.completions.create(
        model="vg-model", messages=HELLO, response_format=_schema_format()
    )
    assert json.loads(reply.choices[0].message.content or "")["answer"] == "from vg"
    body = stack.fake.last("vg")["body"]
    assert body["guided_json"] == SCHEMA
    assert "structured_outputs" not in body
    assert "response_format" not in body


def test_ollama_gets_the_schema_as_format(stack: Stack) -> None:
    """Ollama: the schema goes in `format`, max_tokens in `options.num_predict`."""
    reply = _openai(stack.gateway).chat.completions.create(
        model="ol-model", messages=HELLO, max_tokens=9, response_format=_schema_format()
    )
    assert json.loads(reply.choices[0].message.content or "")["answer"] == "from ol"
    body = stack.fake.last("ol")["body"]
    assert body["format"] == SCHEMA
    assert body["options"]["num_predict"] == 9
    assert body["keep_alive"] == "7m"


def test_openai_upstream_gets_response_format_unchanged(stack: Stack) -> None:
    """A plain OpenAI-compatible upstream gets the request as the client sent it."""
    _openai(stack.gateway).chat.completions.create(
        model="oa-model", messages=HELLO, response_format=_schema_format()
    )
    body = stack.fake.last("oa")["body"]
    assert body["response_format"] == _schema_format()


def test_mlx_json_schema_goes_to_the_next_capable_target(stack: Stack) -> None:
    """An alias [mlx, vllm] with a schema: mlx is skipped, vLLM answers, mlx sees nothing."""
    before = stack.fake.count("mx")
    reply = _openai(stack.gateway).chat.completions.create(
        model="mx-first", messages=HELLO, response_format=_schema_format()
    )
    assert json.loads(reply.choices[0].message.content or "")["answer"] == "from vl"
    assert stack.fake.last("vl")["body"]["structured_outputs"] == {"json": SCHEMA}
    assert stack.fake.count("mx") == before


@pytest.mark.parametrize("model", ["mx-model", "mx-only"])
def test_mlx_json_schema_with_no_capable_target_is_a_400(stack: Stack, model: str) -> None:
    """Only mlx behind the name: a 400 that says why, in both dialects; mlx never called."""
    before = stack.fake.count("mx")
    with pytest.raises(openai.BadRequestError) as err:
        _openai(stack.gateway).chat.completions.create(
            model=model, messages=HELLO, response_format=_schema_format()
        )
    assert "json_schema" in str(err.value)
    with pytest.raises(ollama.ResponseError) as oerr:
        _ollama(stack.gateway).chat(model=model, messages=[dict(HELLO[0])], format=SCHEMA)
    assert oerr.value.status_code == 400
    assert "json_schema" in oerr.value.error
    assert stack.fake.count("mx") == before


# --- the Ollama client against each fake backend type -------------------------------


@pytest.mark.parametrize(("model", "name", "kind"), FAKES, ids=FAKE_IDS)
def test_ollama_client_chat_and_stream(stack: Stack, model: str, name: str, kind: str) -> None:
    """The official `ollama` client: chat whole and streamed, over every backend type."""
    client = _ollama(stack.gateway)
    reply = client.chat(
        model=model, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 6}
    )
    assert reply.message.content == f"hello from {name}"
    assert reply.done is True
    assert reply.eval_count == 3
    got = stack.fake.last(name)["body"]
    if kind == "ollama":
        assert got["options"]["num_predict"] == 6
        assert got["keep_alive"] == "7m"
    else:
        assert got["max_tokens"] == 6
    pieces = [
        part.message.content or ""
        for part in client.chat(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    ]
    assert "".join(pieces) == f"hello from {name}"


@pytest.mark.parametrize(("model", "name", "kind"), FAKES, ids=FAKE_IDS)
def test_ollama_client_generate(stack: Stack, model: str, name: str, kind: str) -> None:
    """`/api/generate` (chat-templated): every type answers, whole and streamed."""
    client = _ollama(stack.gateway)
    reply = client.generate(model=model, prompt="hi", system="be brief")
    assert reply.response == f"hello from {name}"
    got = stack.fake.last(name)
    if kind == "ollama":
        assert got["path"] == "/api/chat"
    assert got["body"]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    pieces = [
        part.response or "" for part in client.generate(model=model, prompt="hi", stream=True)
    ]
    assert "".join(pieces) == f"hello from {name}"


@pytest.mark.parametrize(("model", "name", "kind"), FAKES[:3], ids=FAKE_IDS[:3])
def test_ollama_client_embed(stack: Stack, model: str, name: str, kind: str) -> None:
    """`/api/embed` through the `ollama` client."""
    reply = _ollama(stack.gateway).embed(model=model, input=["a", "b"])
    assert [list(v) for v in reply.embeddings] == [[0.25, -0.5, 0.125], [1.25, -0.5, 0.125]]
    assert stack.fake.last(name)["body"]["input"] == ["a", "b"]


def test_ollama_client_format_reaches_each_type(stack: Stack) -> None:
    """Ollama's `format` schema: passed on as `format` to Ollama, `structured_outputs` to
    vLLM; over an [mlx, vllm] alias it skips mlx."""
    client = _ollama(stack.gateway)
    messages = [{"role": "user", "content": "hi"}]
    for model, name in (("ol-model", "ol"), ("vl-model", "vl"), ("mx-first", "vl")):
        reply = client.chat(model=model, messages=messages, format=SCHEMA)
        assert json.loads(reply.message.content or "") == {"answer": f"from {name}", "count": 1}
    assert stack.fake.last("ol")["body"]["format"] == SCHEMA
    assert stack.fake.last("vl")["body"]["structured_outputs"] == {"json": SCHEMA}


# --- health of each type --------------------------------------------------------------


def test_backends_report_health_and_vllm_queue(stack: Stack) -> None:
    """`/v1/backends`: each type healthy through its own probe, vLLM's queue from /metrics."""
    backends = stack.gateway.backends()
    for name, kind in (("oa", "openai"), ("vl", "vllm"), ("ol", "ollama"), ("mx", "mlx")):
        assert backends[name]["type"] == kind
        assert backends[name]["healthy"] is True, backends[name]
        assert backends[name]["breaker"] == "closed"
    assert backends["vl"]["info"] == {"running": 3.0, "waiting": 7.0}
    probes = {name: set(stack.fake.received(name)["probes"]) for name in ("oa", "vl", "ol", "mx")}
    assert "/models" in probes["oa"]
    assert {"/health", "/metrics"} <= probes["vl"]
    assert "/api/version" in probes["ol"]
    assert "/health" in probes["mx"] and "/models" not in probes["mx"]
    # The figures follow the upstream.
    stack.fake.control("vl", running=1, waiting=12)
    try:
        wait_until(
            lambda: stack.gateway.backends()["vl"]["info"] == {"running": 1.0, "waiting": 12.0},
            "vLLM's new queue figures in /v1/backends",
        )
    finally:
        stack.fake.control("vl", running=3, waiting=7)


@pytest.mark.parametrize("name", ["oa", "vl", "ol", "mx"])
def test_unhealthy_upstream_is_reported_and_recovers(stack: Stack, name: str) -> None:
    """An upstream whose probe fails shows unhealthy (with why), then healthy again."""
    stack.fake.control(name, healthy=False)
    try:
        wait_until(lambda: stack.gateway.backends()[name]["healthy"] is False, f"{name} down")
        assert "503" in stack.gateway.backends()[name]["detail"]
    finally:
        stack.fake.control(name, healthy=True)
    wait_until(lambda: stack.gateway.backends()[name]["healthy"] is True, f"{name} back up")


# --- a second real gateway (embedded llama.cpp, real tokens) as the upstream --------


@pytest.mark.parametrize("model", ["via-openai", "via-ollama"])
def test_two_hops_openai_client_real_tokens(stack: Stack, model: str) -> None:
    """openai client → gateway → (`openai` or `ollama` backend) → gateway → llama.cpp."""
    client = _openai(stack.gateway)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Write one sentence about the sea."}
    ]
    reply = client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0
    )
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) >= 2
    assert "".join(pieces).strip()


@pytest.mark.parametrize("model", ["via-openai", "via-ollama"])
def test_two_hops_ollama_client_real_tokens(stack: Stack, model: str) -> None:
    """ollama client → gateway → (`openai` or `ollama` backend) → gateway → llama.cpp."""
    client = _ollama(stack.gateway)
    messages = [{"role": "user", "content": "Write one sentence about the sea."}]
    options = {"num_predict": 12, "temperature": 0}
    reply = client.chat(model=model, messages=messages, options=options)
    assert (reply.message.content or "").strip()
    assert (reply.eval_count or 0) > 0
    pieces = [
        p.message.content or ""
        for p in client.chat(model=model, messages=messages, options=options, stream=True)
    ]
    assert len([p for p in pieces if p]) >= 2
    assert "".join(pieces).strip()


def test_second_hop_used_each_dialect_with_the_key(stack: Stack) -> None:
    """The second gateway saw `/v1/chat/completions` from the `openai` backend and
    `/api/chat` from the `ollama` backend; the first gateway never shows the key."""
    _openai(stack.gateway).chat.completions.create(model="via-ollama", messages=HELLO, max_tokens=2)
    _openai(stack.gateway).chat.completions.create(model="via-openai", messages=HELLO, max_tokens=2)
    metrics = httpx.get(stack.second.url + "/metrics", timeout=10).text
    routes = {
        line.split('route="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("fieldbox_http_requests_total{") and 'status="200"' in line
    }
    assert {"/api/chat", "/v1/chat/completions"} <= routes
    assert 'status="401"' not in metrics
    described = httpx.get(
        stack.gateway.url + "/v1/backends", headers=stack.gateway.headers, timeout=10
    ).text
    assert stack.second.token not in described
    assert stack.gateway.backends()["hop-ollama"]["url"] == stack.second.url


# --- upstream credentials ---------------------------------------------------------------


def test_upstream_key_comes_from_config_and_the_callers_key_stays_home(stack: Stack) -> None:
    """A backend with `api_key_file` sends that key upstream; one without sends none; the
    caller's own gateway key never reaches any upstream."""
    client = _openai(stack.gateway)
    client.chat.completions.create(model="keyed-model", messages=HELLO)
    assert stack.fake.last("keyed")["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    client.chat.completions.create(model="oa-model", messages=HELLO)
    assert stack.fake.last("oa")["authorization"] is None
    _ollama(stack.gateway).chat(model="ol-model", messages=[{"role": "user", "content": "x"}])
    assert stack.fake.last("ol")["authorization"] is None
    described = httpx.get(
        stack.gateway.url + "/v1/backends", headers=stack.gateway.headers, timeout=10
    ).text
    assert UPSTREAM_SECRET not in described


def test_backend_whose_key_is_missing_is_never_called(stack: Stack) -> None:
    """`api_key_env` naming an unset variable: the backend is out (unhealthy, saying why)
    rather than calling the upstream anonymously."""
    nokey = stack.gateway.backends()["nokey"]
    assert nokey["healthy"] is False
    assert "API key" in nokey["detail"]
    with pytest.raises(openai.APIStatusError) as err:
        _openai(stack.gateway).chat.completions.create(model="nokey-model", messages=HELLO)
    assert err.value.status_code == 503
    assert stack.fake.received("nokey")["count"] == 0
    assert stack.fake.received("nokey")["probes"] == []
