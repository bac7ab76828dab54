"""The OpenAI dialect: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.response import Stream

from inference.backends.base import Json, Kind
from inference.controllers.common import GATEWAY_ROUTE, body_of, config_of, gateway_of, new_call
from inference.errors import error_body
from inference.service import Gateway, StreamState
from inference.validation import check_chat, check_completion, check_embeddings

_encode = msgspec.json.Encoder().encode
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class OpenAIController(Controller):
    """OpenAI-compatible routes; the official `openai` client works unchanged."""

    path = "/v1"
    opt = GATEWAY_ROUTE

    @post("/chat/completions", status_code=200)
    async def chat(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """A chat completion, whole or streamed as server-sent events."""
        body = await body_of(request)
        check_chat(body, config_of(request).max_tokens_limit)
        return await _answer(request, "chat", body)

    @post("/completions", status_code=200)
    async def completions(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """A text completion, whole or streamed."""
        body = await body_of(request)
        check_completion(body, config_of(request).max_tokens_limit)
        return await _answer(request, "completion", body)

    @post("/embeddings", status_code=200)
    async def embeddings(self, request: Request[Any, Any, Any]) -> Json:
        """Embeddings of a string or a list of strings."""
        body = await body_of(request)
        check_embeddings(body)
        reply, _ = await gateway_of(request).embed(
            new_call(request, "embeddings", "openai", body), body
        )
        return reply

    @get("/models")
    async def models(self, request: Request[Any, Any, Any]) -> Json:
        """Aliases and served models."""
        router = gateway_of(request).router
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "fieldbox"}
                for name in router.names()
            ],
        }

    @get("/backends")
    async def backends(self, request: Request[Any, Any, Any]) -> Json:
        """Health, breaker and queue of each backend, and what each alias resolves to."""
        router = gateway_of(request).router
        from inference.slots import list_slots

        return {
            "backends": router.status(),
            "aliases": router.aliases,
            "slots": list_slots(request.app.state.models_dir),
        }


async def _answer(request: Request[Any, Any, Any], kind: Kind, body: Json) -> Response[Any]:
    gateway = gateway_of(request)
    call = new_call(request, "chat" if kind == "chat" else "completions", "openai", body)
    if not call.stream:
        reply, _ = await gateway.generate(call, kind, body)
        content = reply.raw if reply.raw is not None else _encode(reply.body)
        return Response(content, media_type="application/json")
    state, chunks = await gateway.open_stream(call, kind, body)
    return Stream(
        _sse(gateway, state, chunks, request.url.path),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
    )


async def _sse(
    gateway: Gateway, state: StreamState, chunks: AsyncIterator[Json], path: str
) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield b"data: " + _encode(chunk) + b"\n\n"
    if state.error:
        # A failure after the first byte: an error event, then the stream ends (no [DONE]).
        yield b"data: " + _encode(error_body(path, 502, state.error)) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"
