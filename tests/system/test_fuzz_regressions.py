"""The exact requests with which schemathesis (`tests/system/test_fuzz.py`) found a 500.

Each is replayed against a real process and must get its exact 4xx in the app's dialect,
with nothing passed on to a backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inference.upstreams import FakeUpstream, Gateway, remote_backend, start_gateway

MODEL = "fuzz-model"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeUpstream, Gateway]]:
    """A real gateway in front of a fake OpenAI-compatible upstream called `up`."""
    root = tmp_path_factory.mktemp("fuzz-regressions")
    fake = FakeUpstream(root).start()
    try:
        gateway = start_gateway(root / "gw", remote_backend("openai", "up", fake.v1("up"), [MODEL]))
        try:
            yield fake, gateway
        finally:
            gateway.stop()
    finally:
        fake.stop()


# Found by the coverage phase: a role that is a JSON object or array is unhashable, and the
# `role in _ROLES` test raised TypeError (a 500) instead of refusing the message.
@pytest.mark.parametrize("role", [{}, [], ["user"], {"user": 1}])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_unhashable_message_role_is_400(
    stack: tuple[FakeUpstream, Gateway], path: str, role: Any
) -> None:
    """A message whose role is an object or array is a 400 naming the message."""
    fake, gateway = stack
    before = fake.count("up")
    body = {"model": MODEL, "stream": False, "messages": [{"role": role, "content": ""}]}
    r = httpx.post(gateway.url + path, json=body, headers=gateway.headers, timeout=30)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    if path.startswith("/api/"):
        assert r.json() == {"error": "messages[0] needs a role (one of " + _roles() + ")"}
    else:
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "messages[0]"
        assert error["message"].startswith("messages[0] needs a role")
    assert fake.count("up") == before


def _roles() -> str:
    return ", ".join(sorted({"system", "user", "assistant", "tool", "developer", "function"}))


def test_gateway_schema_names_every_route(tmp_path: Path) -> None:
    """The gateway's hand-written OpenAPI document lists every route the app serves."""
    from inference.app import create_gateway_app
    from inference.controllers.completions import ROUTES
    from inference.controllers.schema import openapi_document
    from tests.conftest import make_config

    cfg = make_config(tmp_path / "data")
    app = create_gateway_app(cfg.gateway, cfg.inference, cfg.store)
    served = {
        (method.lower(), route.path)
        for route in app.routes
        for method in getattr(route, "methods", set())
        if method not in {"HEAD", "OPTIONS"}
    } | {("post", path) for path in ROUTES}  # the completion routes answer ahead of Litestar
    documented = {
        (method, path) for path, ops in openapi_document()["paths"].items() for method in ops
    }
    assert served == documented
