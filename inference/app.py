"""`create_gateway_app`: the only place the model gateway is assembled."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State

from inference.access import Access, Caller
from inference.config import GatewayConfig, InferenceConfig
from inference.controllers.completions import CompletionRoutes
from inference.controllers.ollama_api import OllamaController
from inference.controllers.openai_api import OpenAIController
from inference.controllers.schema import SchemaController
from inference.controllers.status import StatusController
from inference.errors import EXCEPTION_HANDLERS
from inference.metrics import GatewayMetrics
from inference.router import Router
from inference.service import Gateway
from store import keys
from store.config import StoreConfig
from store.paths import Layout
from store.telemetry import Spool

_NOSNIFF = (b"x-content-type-options", b"nosniff")


async def _admit(request: Request[Any, Any, Any]) -> None:
    """App-wide before-request hook: routes marked `opt["gateway"]` need an allowed caller."""
    if not request.route_handler.opt.get("gateway"):
        return
    access: Access = request.app.state.access
    caller: Caller = await access.check_scope(request.scope)
    request.state.caller = caller


class NoSniff:
    """ASGI wrapper: `X-Content-Type-Options: nosniff` on every response, errors included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                if all(name.lower() != _NOSNIFF[0] for name, _ in headers):
                    headers.append(_NOSNIFF)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


def create_gateway_app(
    gw: GatewayConfig, inference: InferenceConfig, store: StoreConfig
) -> Litestar:
    """Build the gateway for one config; backends start in the lifespan, stop after it."""
    layout = Layout(Path(store.data_dir))
    metrics = GatewayMetrics()
    router = Router(inference, layout.models_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        layout.ensure()
        key_db = keys.open_keys(str(layout.keys_db), store)
        spool = Spool(layout.telemetry_dir, writer=f"gateway-{os.getpid()}")
        app.state.access = Access(gw, keys.Verifier(key_db))
        app.state.gateway = Gateway(
            router, metrics, spool, gw.capture_prompts, gw.background_quiet_s
        )
        await router.start()
        try:
            yield
        finally:
            await router.close()
            spool.close()
            key_db.close()

    app = Litestar(
        route_handlers=[StatusController, OpenAIController, OllamaController, SchemaController],
        before_request=_admit,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=gw.max_body_bytes,
        state=State(
            {"router": router, "metrics": metrics, "config": gw, "models_dir": layout.models_dir}
        ),
        openapi_config=None,
        debug=False,
        logging_config=None,
    )
    # Outside Litestar's router, so unmatched routes (404, 405) and errors carry it too.
    # The completion routes answer ahead of it and set their own.
    app.asgi_handler = CompletionRoutes(NoSniff(app.asgi_handler), app.state)
    return app
