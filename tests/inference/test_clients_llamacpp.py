"""The official `openai` and `ollama` clients, unchanged, against a real gateway process
serving the embedded default (SmolLM2-135M on llama.cpp)."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import jsonschema
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.inference.conftest import MODEL, Gateway

pytestmark = pytest.mark.timeout(120)

# Small enough for a 135M model to fill in a few dozen tokens; enums keep the answer short.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
        "count": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["color", "count", "ok"],
    "additionalProperties": False,
}
ASK_JSON: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Answer with JSON only."},
    {"role": "user", "content": "Pick a color, a count and whether it is ok."},
]
HELLO: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say hello to the field crew."}
]


def _valid(text: str) -> dict[str, Any]:
    value = json.loads(text)
    jsonschema.validate(value, SCHEMA)
    assert isinstance(value, dict)
    return value


# --- model lists -------------------------------------------------------------------------


# The embedded default's embedding model and its alias, beside the chat model.
EMBED_MODEL, EMBED_ALIAS = "multilingual-e5-small", "embeddings-default"


def test_openai_lists_the_default_model(gateway: Gateway) -> None:
    """`client.models.list()` shows the embedded default by the names clients ask for."""
    ids = [m.id for m in gateway.openai().models.list()]
    assert ids == [EMBED_ALIAS, MODEL, EMBED_MODEL]


def test_ollama_list_ps_and_show(gateway: Gateway) -> None:
    """`ollama list`, `ollama ps` and `ollama show` describe the default model and backend."""
    client = gateway.ollama()
    assert [m.model for m in client.list().models] == [EMBED_ALIAS, MODEL, EMBED_MODEL]
    running = client.ps().models
    assert [m.model for m in running] == [MODEL, EMBED_MODEL], "a loaded model is not running"
    shown = client.show(MODEL)
    assert shown.modelinfo is not None
    targets = shown.modelinfo["fieldbox.targets"]
    assert targets == [{"backend": "local", "type": "llamacpp", "model": MODEL}]
    assert shown.capabilities is not None and "completion" in shown.capabilities


def test_ollama_version_needs_no_key(gateway: Gateway) -> None:
    """`/api/version` is open, as Ollama's is: clients probe it before anything else."""
    r = httpx.get(gateway.url + "/api/version", timeout=10)
    assert r.status_code == 200
    assert isinstance(r.json()["version"], str) and r.json()["version"]


# --- OpenAI dialect ----------------------------------------------------------------------


def test_openai_chat(gateway: Gateway) -> None:
    """A chat completion comes back with text, the model name asked for and token counts."""
    reply = gateway.openai().chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=16,
        temperature=0,
    )
    assert reply.model == MODEL
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert 1 <= reply.usage.completion_tokens <= 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_openai_chat_stream(gateway: Gateway) -> None:
    """A streamed chat arrives as several chunks that join into the answer; usage on request."""
    stream = gateway.openai().chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 3, f"expected the answer token by token, got {pieces!r}"
    assert "".join(pieces).strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    assert all(c.model == MODEL for c in chunks)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1, "include_usage asks for exactly one usage chunk"
    assert usage[0].prompt_tokens > 0
    assert 1 <= usage[0].completion_tokens <= 24


def test_streamed_chat_reports_the_same_prompt_tokens(gateway: Gateway) -> None:
    """The same chat, streamed or not, reports the same prompt token count."""
    client = gateway.openai()
    whole = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    (usage,) = [c.usage for c in stream if c.usage is not None]
    assert whole.usage is not None
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_openai_stream_without_usage_has_no_empty_chunks(gateway: Gateway) -> None:
    """Without `include_usage`, every chunk carries a choice (clients index choices[0])."""
    stream = gateway.openai().chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    assert chunks
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_openai_completion(gateway: Gateway) -> None:
    """A text completion continues the prompt, whole or streamed."""
    client = gateway.openai()
    reply = client.completions.create(
        model=MODEL, prompt="The inspection report says", max_tokens=16, temperature=0
    )
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and 1 <= reply.usage.completion_tokens <= 16

    stream = client.completions.create(
        model=MODEL, prompt="The inspection report says", max_tokens=16, temperature=0, stream=True
    )
    pieces = [c.choices[0].text for c in stream if c.choices and c.choices[0].text]
    assert len(pieces) >= 3
    assert "".join(pieces).strip()


def test_openai_json_schema_output(gateway: Gateway) -> None:
    """`response_format: json_schema` gives an answer that parses and validates."""
    reply = gateway.openai().chat.completions.create(
        model=MODEL,
        messages=ASK_JSON,
        max_tokens=64,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "pick", "schema": SCHEMA, "strict": True},
        },
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert choice.message.content is not None
    _valid(choice.message.content)


def test_openai_json_schema_output_streamed(gateway: Gateway) -> None:
    """A streamed structured answer joins into a document that validates."""
    stream = gateway.openai().chat.completions.create(
        model=MODEL,
        messages=ASK_JSON,
        max_tokens=64,
        temperature=0,
        stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    _valid(text)


def test_openai_json_object_output(gateway: Gateway) -> None:
    """`response_format: json_object` gives a JSON object."""
    reply = gateway.openai().chat.completions.create(
        model=MODEL,
        messages=ASK_JSON,
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_object"},
    )
    choice = reply.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content or ""), dict)
    else:  # cut short: then at least the start of an object
        assert (choice.message.content or "").lstrip().startswith("{")


def test_openai_embeddings(gateway: Gateway) -> None:
    """Embeddings: one vector per input, all the same length, different for different text."""
    reply = gateway.openai().embeddings.create(
        model=MODEL, input=["a cracked weld on the north beam", "the weather is sunny"]
    )
    assert [d.index for d in reply.data] == [0, 1]
    first, second = (d.embedding for d in reply.data)
    assert len(first) == len(second) > 0
    assert all(math.isfinite(x) for x in first + second)
    assert first != second
    assert reply.usage.prompt_tokens > 0


# --- Ollama dialect ----------------------------------------------------------------------


def test_ollama_chat(gateway: Gateway) -> None:
    """`ollama.chat` (not streamed) answers with an assistant message and counts."""
    reply = gateway.ollama().chat(
        model=MODEL, messages=HELLO, stream=False, options={"num_predict": 16, "temperature": 0}
    )
    assert reply.model == MODEL
    assert reply.done is True
    assert reply.message.role == "assistant"
    assert reply.message.content and reply.message.content.strip()
    assert reply.prompt_eval_count and reply.prompt_eval_count > 0
    assert reply.eval_count is not None and 1 <= reply.eval_count <= 16


def test_ollama_chat_stream(gateway: Gateway) -> None:
    """A streamed Ollama chat: several content lines, then one `done` line."""
    parts = list(
        gateway.ollama().chat(
            model=MODEL, messages=HELLO, stream=True, options={"num_predict": 24, "temperature": 0}
        )
    )
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    pieces = [p.message.content for p in parts[:-1] if p.message.content]
    assert len(pieces) >= 3
    assert "".join(pieces).strip()
    assert parts[-1].done_reason in ("stop", "length")
    assert parts[-1].eval_count is not None and 1 <= parts[-1].eval_count <= 24


def test_ollama_generate(gateway: Gateway) -> None:
    """`ollama.generate`, whole and streamed, and `raw` (no chat template)."""
    client = gateway.ollama()
    opts = {"num_predict": 16, "temperature": 0}
    whole = client.generate(model=MODEL, prompt="Name one safety rule.", options=opts)
    assert whole.done and (whole.response or "").strip()

    parts = list(
        client.generate(model=MODEL, prompt="Name one safety rule.", options=opts, stream=True)
    )
    assert parts[-1].done
    pieces = [p.response for p in parts if p.response]
    assert len(pieces) >= 3 and "".join(pieces).strip()

    raw = client.generate(model=MODEL, prompt="The inspection report says", raw=True, options=opts)
    assert raw.done and (raw.response or "").strip()


def test_ollama_structured_output(gateway: Gateway) -> None:
    """Ollama's `format=<schema>` gives an answer that parses and validates."""
    reply = gateway.ollama().chat(
        model=MODEL,
        messages=ASK_JSON,
        format=SCHEMA,
        stream=False,
        options={"num_predict": 64, "temperature": 0},
    )
    assert reply.done_reason == "stop", reply.message.content
    _valid(reply.message.content or "")


def test_ollama_embed_matches_openai_embeddings(gateway: Gateway) -> None:
    """`ollama.embed` gives the same vectors as the OpenAI route, for one text or several."""
    text = "a cracked weld on the north beam"
    one = gateway.ollama().embed(model=MODEL, input=text)
    assert one.model == MODEL
    assert len(one.embeddings) == 1
    same = gateway.openai().embeddings.create(model=MODEL, input=text).data[0].embedding
    assert len(one.embeddings[0]) == len(same)
    assert all(
        math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)
        for a, b in zip(one.embeddings[0], same, strict=True)
    )

    many = gateway.ollama().embed(model=MODEL, input=[text, "the weather is sunny"])
    assert len(many.embeddings) == 2
    assert many.embeddings[0] != many.embeddings[1]
