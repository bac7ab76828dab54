"""Background embeddings (RFC 9218 `Priority: u=7`, the api's ask indexer) wait for a pause
in the chats: the box's cores go to a crew's question first."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.inference.upstreams import FakeUpstream, remote_backend, running, start_gateway

LOW = {"Priority": "u=7"}


def _embed(c: httpx.Client, headers: dict[str, str] | None = None) -> httpx.Response:
    return c.post("/v1/embeddings", json={"model": "m-emb", "input": ["a"]}, headers=headers)


def _streamed_chat(url: str, headers: dict[str, str]) -> str:
    body = {"model": "m-chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as resp:
        assert resp.status_code == 200
        return "".join(resp.iter_text())


def _deferred_count(c: httpx.Client) -> float:
    text = c.get("/metrics").text
    found = re.search(r'^fieldbox_gateway_rejected_total\{reason="deferred"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_background_embeddings_wait_for_a_pause_in_the_chats(tmp_path: Path) -> None:
    """While a streamed chat runs, a `u=7` embeddings call gets 503 `deferred` with
    Retry-After (both dialects) and never reaches its backend; other urgencies run at once;
    once the chat ended and the quiet time passed, following Retry-After gets the vectors."""
    fake = FakeUpstream(tmp_path).start()
    try:
        toml = (
            "[gateway]\nbackground_quiet_s = 1.0\n\n"
            + remote_backend("openai", "chat", fake.v1("chat"), ["m-chat"])
            + remote_backend("openai", "emb", fake.v1("emb"), ["m-emb"])
        )
        fake.control("chat", mode="hold")
        gw = start_gateway(tmp_path / "data", toml)
        with running(gw), gw.client() as c, ThreadPoolExecutor(1) as pool:
            chat = pool.submit(_streamed_chat, gw.url, gw.headers)
            try:
                deadline = time.monotonic() + 15
                while fake.count("chat") < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert fake.count("chat") == 1, "the chat never reached its upstream"

                put_off = _embed(c, LOW)
                assert put_off.status_code == 503, put_off.text
                assert put_off.json()["error"]["code"] == "deferred"
                assert int(put_off.headers["Retry-After"]) >= 1
                also = _embed(c, {"Priority": "u=7, i"})
                assert (also.status_code, also.json()["error"]["code"]) == (503, "deferred")
                ollama = c.post("/api/embed", json={"model": "m-emb", "input": "a"}, headers=LOW)
                assert ollama.status_code == 503 and "retry" in ollama.json()["error"]
                assert fake.count("emb") == 0, "a deferred call reached the backend"

                for crew in (None, {"Priority": "u=3"}, {"Priority": "i"}):
                    now = _embed(c, crew)
                    assert now.status_code == 200, (crew, now.text)
                    assert len(now.json()["data"]) == 1
                assert fake.count("emb") == 3
            finally:
                fake.control("chat", release=True)
            assert chat.result(30).rstrip().endswith("data: [DONE]")

            answers: list[int] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = _embed(c, LOW)
                answers.append(r.status_code)
                if r.status_code == 200:
                    break
                assert (r.status_code, r.json()["error"]["code"]) == (503, "deferred")
                time.sleep(float(r.headers["Retry-After"]))  # as the protocol says
            assert answers[-1] == 200, answers
            assert fake.count("emb") == 4
            assert _deferred_count(c) == 3 + len(answers) - 1
    finally:
        fake.stop()
