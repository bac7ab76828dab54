"""The Ollama dialect: `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/show`,
`/api/ps`, `/api/version`; streams are NDJSON, as Ollama streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.response import Stream

from inference import __version__, translate
from inference.backends.base import Capabilities, Json, Kind
from inference.controllers.common import GATEWAY_ROUTE, body_of, config_of, gateway_of, new_call
from inference.service import StreamState
from inference.validation import RequestError, check_chat, check_completion, check_embeddings

_encode = msgspec.json.Encoder().encode
_EPOCH = "1970-01-01T00:00:00Z"


class OllamaController(Controller):
    """Ollama-compatible routes; the official `ollama` client works unchanged."""

    path = "/api"

    @post("/chat", status_code=200, opt=GATEWAY_ROUTE)
    async def chat(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """A chat answer; streamed unless `stream` is false."""
        body = translate.from_ollama_chat(await body_of(request))
        check_chat(body, config_of(request).max_tokens_limit)
        return await _answer(request, "chat", body, generate=False)

    @post("/generate", status_code=200, opt=GATEWAY_ROUTE)
    async def generate(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """A completion of a prompt (chat-templated unless `raw`)."""
        kind, body = translate.from_ollama_generate(await body_of(request))
        limit = config_of(request).max_tokens_limit
        check_chat(body, limit) if kind == "chat" else check_completion(body, limit)
        return await _answer(request, kind, body, generate=True)

    @post("/embed", status_code=200, opt=GATEWAY_ROUTE)
    async def embed(self, request: Request[Any, Any, Any]) -> Json:
        """Embeddings of a string or a list of strings."""
        body = translate.from_ollama_embed(await body_of(request))
        check_embeddings(body)
        call = new_call(request, "embeddings", "ollama", body)
        reply, _ = await gateway_of(request).embed(call, body)
        return translate.to_ollama_embed(reply, call.requested)

    @get("/tags", opt=GATEWAY_ROUTE)
    async def list_tags(self, request: Request[Any, Any, Any]) -> Json:
        """Every name a client may ask for, in Ollama's list shape."""
        router = gateway_of(request).router
        return {"models": [_model_entry(name) for name in router.names()]}

    @post("/show", status_code=200, opt=GATEWAY_ROUTE)
    async def show(self, request: Request[Any, Any, Any]) -> Json:
        """What a name is: the backends and models behind it."""
        body = await body_of(request)
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError("model is required", param="model")
        targets = gateway_of(request).router.targets(name)
        caps = targets[0][0].backend.capabilities
        return {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": _details(),
            "model_info": {
                "fieldbox.targets": [
                    {"backend": s.backend.name, "type": s.backend.type_name, "model": m}
                    for s, m in targets
                ]
            },
            "capabilities": _capabilities(caps),
            "modified_at": _EPOCH,
        }

    @get("/ps", opt=GATEWAY_ROUTE)
    async def ps(self, request: Request[Any, Any, Any]) -> Json:
        """Models on healthy backends (loaded and answering)."""
        router = gateway_of(request).router
        running = [
            {**_model_entry(model), "expires_at": _EPOCH, "size_vram": 0}
            for lane in router.lanes.values()
            if lane.health.ok
            for model in lane.backend.models
        ]
        return {"models": running}

    @get("/version")
    async def version(self) -> Json:
        """The gateway's version (open, as Ollama's is)."""
        return {"version": __version__}


def _details() -> Json:
    return {
        "parent_model": "",
        "format": "",
        "family": "",
        "families": [],
        "parameter_size": "",
        "quantization_level": "",
    }


def _capabilities(caps: Capabilities) -> list[str]:
    # Ollama's words: an embedding-only model is `embedding`, not `completion`.
    if caps.embeddings and not (caps.chat or caps.completion):
        return ["embedding"]
    return ["completion", *(["tools"] if caps.tools else [])]


def _model_entry(name: str) -> Json:
    return {
        "name": name,
        "model": name,
        "modified_at": _EPOCH,
        "size": 0,
        "digest": "",
        "details": _details(),
    }


async def _answer(
    request: Request[Any, Any, Any], kind: Kind, body: Json, generate: bool
) -> Response[Any]:
    gateway = gateway_of(request)
    endpoint = "generate" if generate else "chat"
    call = new_call(request, endpoint, "ollama", body)
    if not call.stream:
        reply, _ = await gateway.generate(call, kind, body)
        elapsed = int((time.perf_counter() - call.started) * 1e9)
        if generate:
            return Response(translate.to_ollama_generate(reply.body, kind, call.requested, elapsed))
        return Response(translate.to_ollama_chat(reply.body, call.requested, elapsed))
    state, batches = await gateway.open_stream(call, kind, body)
    return Stream(
        _ndjson(kind, state, batches, call.requested, generate, call.started),
        media_type="application/x-ndjson",
    )


async def _ndjson(
    kind: Kind,
    state: StreamState,
    batches: AsyncIterator[list[Json]],
    model: str,
    generate: bool,
    started: float,
) -> AsyncIterator[bytes]:
    async for batch in batches:
        # The lines that came in together go out in one write.
        lines = [translate.to_ollama_chunk(kind, chunk, model, generate) for chunk in batch]
        out = b"".join(_encode(line) + b"\n" for line in lines if line is not None)
        if out:
            yield out
    if state.error:
        yield _encode({"error": state.error}) + b"\n"
        return
    elapsed = int((time.perf_counter() - started) * 1e9)
    yield (
        _encode(translate.ollama_final_chunk(model, generate, state.finish, state.usage, elapsed))
        + b"\n"
    )
