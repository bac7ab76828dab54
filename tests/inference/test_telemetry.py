"""The telemetry spool: one JSON line per model call, with or without the prompt and answer."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from openai.types.chat import ChatCompletionMessageParam

from inference.app import create_gateway_app
from store import telemetry
from store.telemetry import Spool
from tests.conftest import make_config
from tests.inference.conftest import MODEL, Gateway, bearer, new_key, start_gateway

pytestmark = pytest.mark.timeout(120)

ALIAS = "chat-default"
TOML = f"""
[inference.aliases]
{ALIAS} = ["{MODEL}"]
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The embedded default behind an alias, with prompts captured (the default)."""
    gw = start_gateway(tmp_path_factory.mktemp("telemetry"), TOML, key_name="telemetry-probe")
    try:
        yield gw
    finally:
        gw.server.stop()


def _records(data_dir: Path) -> list[dict[str, Any]]:
    return telemetry.read_all(data_dir / "telemetry")


def _the_record(data_dir: Path, marker: str) -> dict[str, Any]:
    """The one record whose captured request mentions `marker`."""
    found = [r for r in _records(data_dir) if marker in str(r.get("request"))]
    assert len(found) == 1, f"expected one record for {marker!r}, found {len(found)}"
    return found[0]


def _marker() -> str:
    return f"inspection-{secrets.token_hex(4)}"


def test_chat_is_recorded(gateway: Gateway) -> None:
    """A chat leaves a line naming the key, the alias asked for, the backend and model used,
    token counts, latency, and the messages and answer."""
    marker = _marker()
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": f"Summarise {marker} in one line."}
    ]
    reply = gateway.openai().chat.completions.create(
        model=ALIAS,
        messages=messages,
        max_tokens=16,
        temperature=0,
    )
    record = _the_record(gateway.cfg.data_dir, marker)
    assert record["caller"] == "telemetry-probe"
    assert record["via"] == "key"
    assert record["alias"] == ALIAS
    assert record["backend"] == "local"
    assert record["model"] == MODEL
    assert (record["endpoint"], record["dialect"], record["stream"]) == ("chat", "openai", False)
    assert reply.usage is not None
    assert record["tokens_in"] == reply.usage.prompt_tokens > 0
    assert record["tokens_out"] == reply.usage.completion_tokens > 0
    assert isinstance(record["latency_ms"], float) and record["latency_ms"] > 0
    assert record["error"] is None
    assert record["request"] == {"messages": messages}
    assert record["response"] == reply.choices[0].message.content
    assert isinstance(record["request_id"], str) and record["request_id"]
    assert record["ts"] > 0


def test_stream_is_recorded_with_the_whole_answer(gateway: Gateway) -> None:
    """A streamed Ollama chat is one line: the joined answer, its counts, time to first token."""
    marker = _marker()
    parts = list(
        gateway.ollama().chat(
            model=ALIAS,
            messages=[{"role": "user", "content": f"Describe {marker}."}],
            stream=True,
            options={"num_predict": 16, "temperature": 0},
        )
    )
    record = _the_record(gateway.cfg.data_dir, marker)
    assert (record["endpoint"], record["dialect"], record["stream"]) == ("chat", "ollama", True)
    assert (record["alias"], record["model"]) == (ALIAS, MODEL)
    assert record["response"] == "".join(p.message.content or "" for p in parts)
    assert parts[-1].eval_count is not None
    assert record["tokens_out"] == parts[-1].eval_count > 0
    assert record["ttft_ms"] is not None and 0 < record["ttft_ms"] <= record["latency_ms"]
    assert record["error"] is None


def test_embeddings_and_completions_are_recorded(gateway: Gateway) -> None:
    """Embeddings and text completions each leave their own line."""
    marker = _marker()
    client = gateway.openai()
    client.embeddings.create(model=ALIAS, input=[f"{marker} one", f"{marker} two"])
    record = _the_record(gateway.cfg.data_dir, f"{marker} one")
    assert record["endpoint"] == "embeddings"
    assert record["request"] == {"input": [f"{marker} one", f"{marker} two"]}
    assert record["tokens_in"] > 0
    assert record["response"] is None

    marker = _marker()
    reply = client.completions.create(model=MODEL, prompt=f"{marker}:", max_tokens=8)
    record = _the_record(gateway.cfg.data_dir, marker)
    assert (record["endpoint"], record["alias"]) == ("completions", MODEL)
    assert record["response"] == reply.choices[0].text


def test_each_caller_is_named(gateway: Gateway) -> None:
    """Lines name the key that made the call, so usage can be told apart per holder."""
    _, token = new_key(gateway.cfg, "office-laptop", ("gateway",))
    marker = _marker()
    gateway.openai(token).chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": marker}],
        max_tokens=4,
    )
    assert _the_record(gateway.cfg.data_dir, marker)["caller"] == "office-laptop"


def test_refused_requests_are_not_model_calls(gateway: Gateway) -> None:
    """A request refused before any model ran (no key, bad body) adds no line."""
    before = len(_records(gateway.cfg.data_dir))
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}
    assert httpx.post(gateway.url + "/v1/chat/completions", json=body).status_code == 401
    r = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=bearer(gateway.token))
    assert r.status_code == 400
    assert len(_records(gateway.cfg.data_dir)) == before


# --- capture_prompts = false -------------------------------------------------------------


@pytest.fixture
def metadata_only(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:  # type: ignore[type-arg]
    """An in-process gateway with `capture_prompts = false`, and its data root."""
    cfg = make_config(tmp_path / "data", "[gateway]\ncapture_prompts = false\n")
    _, token = new_key(cfg, "private", ("gateway",))
    app = create_gateway_app(cfg.gateway, cfg.inference, cfg.store)
    with TestClient(app=app) as client:
        client.headers.update(bearer(token))
        yield client, cfg.data_dir


def test_capture_prompts_false_keeps_metadata_only(
    metadata_only: tuple[TestClient, Path],  # type: ignore[type-arg]
) -> None:
    """With capture_prompts off, lines carry who, what model, counts and timing, but neither
    the prompt nor the answer, for whole and streamed calls alike."""
    client, data_dir = metadata_only
    marker = _marker()
    chat = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Secret site {marker}."}],
        "max_tokens": 8,
        "temperature": 0,
    }
    whole = client.post("/v1/chat/completions", json=chat)
    assert whole.status_code == 200, whole.text
    answer = whole.json()["choices"][0]["message"]["content"]
    streamed = client.post("/api/chat", json=chat)
    assert streamed.status_code == 200, streamed.text
    embedded = client.post("/v1/embeddings", json={"model": MODEL, "input": marker})
    assert embedded.status_code == 200, embedded.text

    records = _records(data_dir)
    assert [(r["endpoint"], r["stream"]) for r in records] == [
        ("chat", False),
        ("chat", True),
        ("embeddings", False),
    ]
    for record in records:
        assert "request" not in record and "response" not in record
        assert record["caller"] == "private"
        assert (record["alias"], record["backend"], record["model"]) == (MODEL, "local", MODEL)
        assert record["tokens_in"] > 0
        assert record["latency_ms"] > 0
    assert records[0]["tokens_out"] == whole.json()["usage"]["completion_tokens"]
    files = list((data_dir / "telemetry").rglob("*.jsonl"))
    assert files
    written = "".join(f.read_text() for f in files)
    assert marker not in written
    assert answer.strip() and answer.strip() not in written


# --- the Spool itself --------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"))


def test_spool_rotates_by_size(tmp_path: Path) -> None:
    """Past `max_file_bytes` the next line goes to a new file; nothing is lost or reordered."""
    spool = Spool(tmp_path, writer="w", max_file_bytes=200)
    for i in range(10):
        spool.append({"i": i, "pad": "x" * 40})
    spool.close()
    files = _files(tmp_path)
    assert len(files) >= 3
    assert all(f.stat().st_size <= 200 + 60 for f in files)
    assert [r["i"] for r in telemetry.read_all(tmp_path)] == list(range(10))
    assert all(f.name.split("-", 1)[1].startswith("w.") for f in files)


def test_spool_never_appends_to_an_earlier_runs_file(tmp_path: Path) -> None:
    """A writer restarted under the same name starts a new file (O_EXCL); the file an
    earlier run left, even one cut off mid-line, is not touched."""
    first = Spool(tmp_path, writer="gateway-1")
    first.append({"run": 1})
    first.close()
    (left,) = _files(tmp_path)
    with left.open("ab") as f:
        f.write(b'{"run": 1, "cut')  # the earlier run died mid-line
    before = left.read_bytes()

    second = Spool(tmp_path, writer="gateway-1")
    second.append({"run": 2})
    second.close()
    assert left.read_bytes() == before
    files = _files(tmp_path)
    assert len(files) == 2
    (new,) = [f for f in files if f != left]
    assert new.read_bytes() == b'{"run":2}\n'
    assert second.current_path == new


def test_spool_lines_are_visible_before_close(tmp_path: Path) -> None:
    """Each line reaches the file at once (a reader sees it while the writer runs)."""
    spool = Spool(tmp_path, writer=f"p{os.getpid()}")
    spool.append({"n": 1})
    assert telemetry.read_all(tmp_path) == [{"n": 1}]
    spool.append({"n": 2})
    assert telemetry.read_all(tmp_path) == [{"n": 1}, {"n": 2}]
    spool.close()
