"""`openai`: any OpenAI-compatible upstream (also the base of `vllm` and `mlx`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import cast

import msgspec

from inference.backends import registry
from inference.backends.base import BackendError, Json, Kind, Reply
from inference.backends.http import HttpBackend, RemoteConfig

_decode = msgspec.json.Decoder().decode
_PATHS: dict[Kind, str] = {"chat": "/chat/completions", "completion": "/completions"}


class OpenAIConfig(RemoteConfig, tag="openai", kw_only=True):
    """Any other OpenAI-compatible upstream (a cloud fallback needs `api_key_env`/`_file`)."""


class OpenAIBackend(HttpBackend):
    """Speaks `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` upstream."""

    type_name = "openai"
    health_path = "/models"

    def prepare(self, kind: Kind, body: Json) -> Json:
        """The request as this upstream wants it (structured-output parameters, say)."""
        return body

    async def generate(self, kind: Kind, body: Json) -> Reply:
        """POST and return the upstream's answer as it came."""
        data, raw = await self.post_json(_PATHS[kind], self.prepare(kind, body))
        return Reply(data, raw)

    async def stream(self, kind: Kind, body: Json) -> AsyncGenerator[list[Json], None]:
        """Server-sent events → chunk dicts, those in together at once; `[DONE]` ends it."""
        wanted = self.prepare(kind, body)
        # Ask for the usage chunk so token counts are known; the service drops it again
        # for clients that did not ask for it.
        wanted = {**wanted, "stream": True, "stream_options": {"include_usage": True}}
        # Closed here at `[DONE]`: left to the garbage collector, the upstream connection
        # would go back to the pool a loop turn later, through a task of its own.
        async with aclosing(self.post_lines(_PATHS[kind], wanted)) as batches:
            async for lines in batches:
                chunks: list[Json] = []
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        if chunks:
                            yield chunks
                        return
                    chunks.append(self._chunk(payload))
                if chunks:
                    yield chunks

    def _chunk(self, payload: bytes) -> Json:
        try:
            chunk = _decode(payload)
        except msgspec.DecodeError as exc:
            raise BackendError(502, f"{self.name}: bad stream chunk", retryable=False) from exc
        if isinstance(chunk, dict) and "error" in chunk:
            err = chunk["error"]
            message = err.get("message", "") if isinstance(err, dict) else str(err)
            raise BackendError(502, f"{self.name}: {self.redact(message)}", retryable=False)
        return cast(Json, chunk)

    async def embed(self, body: Json) -> Json:
        """POST `/embeddings`."""
        data, _ = await self.post_json("/embeddings", body)
        return data


registry.register(OpenAIConfig, OpenAIBackend)
