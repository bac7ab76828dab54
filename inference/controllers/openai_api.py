"""The OpenAI dialect: `/v1/embeddings`, `/v1/models`, `/v1/backends`.

The two completion routes are plain ASGI ahead of Litestar (controllers/completions.py).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post

from inference.backends.base import Json
from inference.controllers.common import GATEWAY_ROUTE, body_of, gateway_of, new_call
from inference.validation import check_embeddings


class OpenAIController(Controller):
    """OpenAI-compatible routes; the official `openai` client works unchanged."""

    path = "/v1"
    opt = GATEWAY_ROUTE

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
