"""`ollama`: an Ollama server through its native API (`/api/chat`, `/api/generate`, ...)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from pathlib import Path

import msgspec

from inference import translate
from inference.backends import registry
from inference.backends.base import BackendError, Json, Kind, Reply
from inference.backends.http import HttpBackend, RemoteConfig

_decode = msgspec.json.Decoder().decode


class OllamaConfig(RemoteConfig, tag="ollama", kw_only=True):
    """An Ollama server, through its native API."""

    keep_alive: str = "5m"
    """How long Ollama keeps the model loaded after a call (its `keep_alive`)."""


class OllamaBackend(HttpBackend):
    """Ollama's native API: `format` carries JSON schemas, `keep_alive` its model residency."""

    type_name = "ollama"
    health_path = "/api/version"

    def __init__(self, cfg: OllamaConfig, models_dir: Path) -> None:
        super().__init__(cfg, models_dir)
        self.keep_alive = cfg.keep_alive

    async def generate(self, kind: Kind, body: Json) -> Reply:
        """One native call, translated back to the canonical shape."""
        path, native = translate.to_ollama_native(kind, {**body, "stream": False}, self.keep_alive)
        data, _ = await self.post_json(path, native)
        return Reply(translate.from_ollama_native(kind, data, _reply_id(kind)))

    async def stream(self, kind: Kind, body: Json) -> AsyncGenerator[list[Json], None]:
        """NDJSON lines → canonical chunks, those in together at once."""
        path, native = translate.to_ollama_native(kind, {**body, "stream": True}, self.keep_alive)
        reply_id = _reply_id(kind)
        async for lines in self.post_lines(path, native):
            yield [self._chunk(kind, line, reply_id) for line in lines]

    def _chunk(self, kind: Kind, line: bytes, reply_id: str) -> Json:
        try:
            data = _decode(line)
        except msgspec.DecodeError as exc:
            raise BackendError(502, f"{self.name}: bad stream line", retryable=False) from exc
        if isinstance(data, dict) and "error" in data:
            message = self.redact(str(data["error"]))
            raise BackendError(502, f"{self.name}: {message}", retryable=False)
        return translate.from_ollama_native_chunk(kind, data, reply_id)

    async def embed(self, body: Json) -> Json:
        """`/api/embed`."""
        data, _ = await self.post_json(
            "/api/embed", {"model": body["model"], "input": body["input"]}
        )
        return translate.from_ollama_native_embed(data, body["model"])


def _reply_id(kind: Kind) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)


registry.register(OllamaConfig, OllamaBackend)
