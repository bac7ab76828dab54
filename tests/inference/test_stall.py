"""An upstream that stalls mid-stream: the client gets an error event, not a hang."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.inference.upstreams import FakeUpstream, remote_backend, running, start_gateway


def test_a_stalled_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    """Pieces stop coming for longer than `stream_idle_timeout_s`: the stream ends with an
    error event in each dialect, and the backend's slot is free again."""
    fake = FakeUpstream(tmp_path).start()
    try:
        toml = remote_backend(
            "openai", "slow-oa", fake.v1("stall"), ["m-oa"], stream_idle_timeout_s=0.5
        ) + remote_backend(
            "ollama", "slow-ol", fake.base("stall"), ["m-ol"], stream_idle_timeout_s=0.5
        )
        fake.control("stall", mode="trickle", delay_s=2)
        with running(start_gateway(tmp_path / "data", toml)) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0)
            stream = client.chat.completions.create(
                model="m-oa", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            pieces: list[str] = []
            with pytest.raises(openai.APIError, match="stalled"):
                for chunk in stream:
                    pieces.append(chunk.choices[0].delta.content or "")
            assert "".join(pieces).strip() == "0"
            with httpx.stream(
                "POST",
                gw.url + "/api/chat",
                headers=gw.headers,
                json={"model": "m-ol", "messages": [{"role": "user", "content": "hi"}]},
                timeout=20,
            ) as resp:
                lines = [line for line in resp.iter_lines() if line]
            assert '"error"' in lines[-1] and "stalled" in lines[-1]
            busy = {name: b["active"] for name, b in gw.backends().items()}
            assert busy == {"slow-oa": 0, "slow-ol": 0}
    finally:
        fake.stop()
