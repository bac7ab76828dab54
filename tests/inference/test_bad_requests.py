"""Requests the gateway must refuse: a 4xx in the caller's own dialect, never a 500.

OpenAI routes answer `{"error": {"message", "type", "param", "code"}}`, Ollama routes
`{"error": "..."}`; the official clients turn these into their own exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from litestar.testing import TestClient
from openai.types.chat import ChatCompletionMessageParam

from inference.app import create_gateway_app
from tests.conftest import make_config, make_token
from tests.inference.conftest import MODEL, Gateway, bearer, new_key, revoke_key

pytestmark = pytest.mark.timeout(120)

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


def openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    """The OpenAI-shaped error of a response with this status."""
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == OPENAI_ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error, dict)
    return error


def ollama_error(r: httpx.Response, status: int) -> str:
    """The Ollama-shaped error of a response with this status."""
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    message: str = body["error"]
    return message


# --- unknown model -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": HI}),
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/embeddings", {"input": "hi"}),
    ],
)
def test_openai_unknown_model_is_404(gateway: Gateway, path: str, body: dict[str, Any]) -> None:
    """An unknown model is a 404 naming it, with OpenAI's `model_not_found` code."""
    error = openai_error(gateway.post(path, {"model": "no-such-model", **body}), 404)
    assert "no-such-model" in error["message"]
    assert error["param"] == "model"
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"messages": HI}),
        ("/api/generate", {"prompt": "hi"}),
        ("/api/embed", {"input": "hi"}),
        ("/api/show", {}),
    ],
)
def test_ollama_unknown_model_is_404(gateway: Gateway, path: str, body: dict[str, Any]) -> None:
    """The Ollama routes answer an unknown model with a 404 and `{"error": "..."}`."""
    message = ollama_error(gateway.post(path, {"model": "no-such-model", **body}), 404)
    assert "no-such-model" in message


def test_clients_raise_not_found(gateway: Gateway) -> None:
    """The official clients raise their own not-found errors."""
    with pytest.raises(openai.NotFoundError) as info:
        gateway.openai().chat.completions.create(model="no-such-model", messages=HI)
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        gateway.openai().chat.completions.create(model="no-such-model", messages=HI, stream=True)
    with pytest.raises(ollama.ResponseError) as raised:
        gateway.ollama().chat(model="no-such-model", messages=HI, stream=False)
    assert raised.value.status_code == 404
    assert "no-such-model" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        gateway.ollama().show("no-such-model")
    assert raised.value.status_code == 404


# --- malformed bodies --------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b'{"model": "smollm2-135m", "messages": [', b"", b"[1, 2]"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_body_that_is_not_a_json_object_is_400(gateway: Gateway, path: str, raw: bytes) -> None:
    """Broken JSON, no body, or JSON that is not an object: 400 in the route's dialect."""
    r = gateway.post(path, content=raw)
    if path.startswith("/api/"):
        assert "JSON" in ollama_error(r, 400)
    else:
        error = openai_error(r, 400)
        assert "JSON" in error["message"]
        assert error["type"] == "invalid_request_error"


def test_openai_messages_missing_is_400(gateway: Gateway) -> None:
    """A chat without messages (or with an empty list, or a role-less one) is a 400."""
    for body in (
        {"model": MODEL},
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": "hi"},
        {"model": MODEL, "messages": [{"content": "no role"}]},
    ):
        error = openai_error(gateway.post("/v1/chat/completions", body), 400)
        assert error["param"] is not None and error["param"].startswith("messages"), body


def test_ollama_messages_missing_is_400(gateway: Gateway) -> None:
    """The Ollama chat route refuses a request without usable messages."""
    for body in (
        {"model": MODEL, "stream": False},
        {"model": MODEL, "messages": [], "stream": False},
        {"model": MODEL, "messages": ["hi"], "stream": False},
    ):
        assert "message" in ollama_error(gateway.post("/api/chat", body), 400)


def test_prompt_missing_is_400(gateway: Gateway) -> None:
    """Completions need a prompt, in both dialects."""
    error = openai_error(gateway.post("/v1/completions", {"model": MODEL}), 400)
    assert error["param"] == "prompt"
    assert "prompt" in ollama_error(gateway.post("/api/generate", {"model": MODEL}), 400)


def test_model_missing_is_400(gateway: Gateway) -> None:
    """A request that names no model is told so (not a 404 for a model called None)."""
    error = openai_error(gateway.post("/v1/chat/completions", {"messages": HI}), 400)
    assert error["param"] == "model"
    assert "model" in ollama_error(gateway.post("/api/chat", {"messages": HI}), 400)


# --- structured output -------------------------------------------------------------------

BAD_SCHEMA: dict[str, object] = {"type": 12}


def test_openai_invalid_json_schema_is_400(gateway: Gateway) -> None:
    """A response_format schema that is not valid JSON Schema is refused before generation."""
    body = {
        "model": MODEL,
        "messages": HI,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": BAD_SCHEMA},
        },
    }
    error = openai_error(gateway.post("/v1/chat/completions", body), 400)
    assert error["param"] == "response_format"
    assert "JSON Schema" in error["message"]
    with pytest.raises(openai.BadRequestError):
        gateway.openai().chat.completions.create(
            model=MODEL,
            messages=HI,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": BAD_SCHEMA},
            },
        )


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "xml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": "an object please"}},
        "json",
    ],
)
def test_openai_malformed_response_format_is_400(gateway: Gateway, fmt: Any) -> None:
    """Unknown response_format types and schemas that are not objects are 400s."""
    body = {"model": MODEL, "messages": HI, "response_format": fmt}
    error = openai_error(gateway.post("/v1/chat/completions", body), 400)
    assert error["param"] == "response_format"


def test_ollama_invalid_format_schema_is_400(gateway: Gateway) -> None:
    """Ollama's `format` with an invalid schema, or of the wrong kind, is a 400."""
    for fmt in (42, "yaml"):
        body: dict[str, Any] = {"model": MODEL, "messages": HI, "format": fmt, "stream": False}
        assert "format" in ollama_error(gateway.post("/api/chat", body), 400)
    for path in ("/api/chat", "/api/generate"):
        body = {"model": MODEL, "messages": HI, "prompt": "hi", "format": BAD_SCHEMA}
        assert "JSON Schema" in ollama_error(gateway.post(path, body), 400)
    with pytest.raises(ollama.ResponseError) as raised:
        gateway.ollama().chat(model=MODEL, messages=HI, format=BAD_SCHEMA, stream=False)
    assert raised.value.status_code == 400


# --- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -1, 32769, 1.5, "16", True])
def test_openai_bad_max_tokens_is_400(gateway: Gateway, field: str, value: Any) -> None:
    """max_tokens must be a positive integer no larger than the configured limit (32768)."""
    body = {"model": MODEL, "messages": HI, field: value}
    error = openai_error(gateway.post("/v1/chat/completions", body), 400)
    assert error["param"] == field
    if value == 32769:
        assert "32768" in error["message"]


def test_openai_client_max_tokens_errors(gateway: Gateway) -> None:
    """The openai client raises BadRequestError for max_tokens 0 and past the limit."""
    client = gateway.openai()
    for value in (0, 10**6):
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model=MODEL, prompt="hi", max_tokens=value)
        assert info.value.param == "max_tokens"


def test_ollama_num_predict_above_limit_is_400(gateway: Gateway) -> None:
    """Ollama's num_predict is held to the same limit."""
    body = {"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 40000}}
    assert "32768" in ollama_error(gateway.post("/api/generate", body), 400)


@pytest.mark.parametrize("temperature", [-0.1, 2.5, "hot"])
def test_bad_temperature_is_400(gateway: Gateway, temperature: Any) -> None:
    """Temperature outside 0..2 is refused in both dialects."""
    body = {"model": MODEL, "messages": HI, "temperature": temperature}
    assert openai_error(gateway.post("/v1/chat/completions", body), 400)["param"] == "temperature"
    body = {
        "model": MODEL,
        "messages": HI,
        "stream": False,
        "options": {"temperature": temperature},
    }
    assert "temperature" in ollama_error(gateway.post("/api/chat", body), 400)


def test_stream_that_is_not_a_boolean_is_400(gateway: Gateway) -> None:
    """`stream: "yes"` is a mistake to point out, not a truthy value to guess at."""
    body = {"model": MODEL, "messages": HI, "stream": "yes"}
    assert openai_error(gateway.post("/v1/chat/completions", body), 400)["param"] == "stream"


# --- requests that try to choose an upstream or credentials ------------------------------


@pytest.mark.parametrize("field", ["api_base", "base_url", "api_key", "custom_llm_provider"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
def test_openai_request_choosing_an_upstream_is_400(
    gateway: Gateway, path: str, field: str
) -> None:
    """Fields that would pick an upstream or a credential are refused, by name."""
    body = {"model": MODEL, "messages": HI, "input": "hi", field: "http://evil.example/v1"}
    error = openai_error(gateway.post(path, body), 400)
    assert error["param"] == field
    assert field in error["message"]
    assert "evil.example" not in error["message"]


def test_openai_client_extra_body_upstream_is_400(gateway: Gateway) -> None:
    """Through the openai client (`extra_body`), the same: BadRequestError."""
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().chat.completions.create(
            model=MODEL,
            messages=HI,
            max_tokens=4,
            extra_body={"api_base": "http://evil.example/v1"},
        )
    assert info.value.param == "api_base"


@pytest.mark.parametrize("field", ["api_base", "base_url"])
@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed"])
def test_ollama_request_choosing_an_upstream_is_400(
    gateway: Gateway, path: str, field: str
) -> None:
    """The Ollama routes refuse the same fields as the OpenAI ones."""
    body = {
        "model": MODEL,
        "messages": HI,
        "prompt": "hi",
        "input": "hi",
        "stream": False,
        "options": {"num_predict": 1},
        field: "http://evil.example/v1",
    }
    assert field in ollama_error(gateway.post(path, body), 400)


# --- keys --------------------------------------------------------------------------------

ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("GET", "/v1/backends"),
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
    ("POST", "/api/embed"),
    ("POST", "/api/show"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
]


def _call(gateway: Gateway, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {"model": MODEL, "messages": HI, "prompt": "hi", "input": "hi", "max_tokens": 1}
    return httpx.request(
        method,
        gateway.url + path,
        json=body if method == "POST" else None,
        headers=headers,
        timeout=30,
    )


def _refused(r: httpx.Response, path: str, status: int) -> str:
    if path.startswith("/api/"):
        return ollama_error(r, status)
    error = openai_error(r, status)
    assert error["type"] == {401: "authentication_error", 403: "permission_error"}[status]
    message: str = error["message"]
    return message


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_key_is_401(gateway: Gateway, method: str, path: str) -> None:
    """Every model route needs a key: 401 with a Bearer challenge."""
    r = _call(gateway, method, path, {})
    assert "key" in _refused(r, path, 401)
    assert r.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer fbx_000000000000_not-a-real-secret", "Bearer", "Basic dXNlcjpwYXNz", "fbx_x_y"],
)
def test_bad_key_is_401(gateway: Gateway, authorization: str) -> None:
    """A key that does not exist, or an Authorization header of the wrong kind: 401."""
    for method, path in (("POST", "/v1/chat/completions"), ("POST", "/api/chat")):
        _refused(_call(gateway, method, path, {"Authorization": authorization}), path, 401)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_field_only_key_is_403(gateway: Gateway, method: str, path: str) -> None:
    """A valid key without the gateway (or admin) scope is refused with 403."""
    _, token = new_key(gateway.cfg, "tablet", ("field",))
    assert "scope" in _refused(_call(gateway, method, path, bearer(token)), path, 403)


def test_admin_key_is_allowed(gateway: Gateway) -> None:
    """The admin scope includes the gateway."""
    _, token = new_key(gateway.cfg, "ops", ("admin",))
    assert httpx.get(gateway.url + "/v1/models", headers=bearer(token)).status_code == 200


def test_revoked_key_is_401_on_the_next_request(gateway: Gateway) -> None:
    """A key revoked elsewhere (the CLI's own connection) stops working on the next call."""
    key_id, token = new_key(gateway.cfg, "laptop", ("gateway",))
    assert _call(gateway, "GET", "/v1/models", bearer(token)).status_code == 200
    revoke_key(gateway.cfg, key_id)
    for method, path in (("GET", "/v1/models"), ("POST", "/api/chat")):
        assert "revoked" in _refused(_call(gateway, method, path, bearer(token)), path, 401)


def test_clients_raise_auth_errors(gateway: Gateway) -> None:
    """The openai client raises AuthenticationError / PermissionDeniedError; ollama its
    ResponseError with the status."""
    _, field_token = new_key(gateway.cfg, "tablet", ("field",))
    with pytest.raises(openai.AuthenticationError):
        gateway.openai("fbx_000000000000_wrong").models.list()
    with pytest.raises(openai.PermissionDeniedError):
        gateway.openai(field_token).models.list()
    with pytest.raises(ollama.ResponseError) as raised:
        gateway.ollama("fbx_000000000000_wrong").list()
    assert raised.value.status_code == 401
    with pytest.raises(ollama.ResponseError) as raised:
        gateway.ollama(field_token).list()
    assert raised.value.status_code == 403


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/api/version"])
def test_probes_need_no_key(gateway: Gateway, path: str) -> None:
    """Liveness, readiness, metrics and the Ollama version probe stay open."""
    assert httpx.get(gateway.url + path, timeout=10).status_code == 200


# --- in process: limits set in config, an upstream that is down --------------------------

SMALL = """
[[inference.backends]]
name = "remote"
type = "openai"
url = "http://127.0.0.1:1/v1"
models = ["far-model"]

[gateway]
max_body_bytes = 4096
max_tokens_limit = 64
"""


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """An in-process gateway with small limits whose only backend cannot be reached."""
    cfg = make_config(tmp_path / "data", SMALL)
    token = make_token(cfg, ("gateway",))
    app = create_gateway_app(cfg.gateway, cfg.inference, cfg.store)
    with TestClient(app=app) as client:
        client.headers.update(bearer(token))
        yield client


def test_body_over_the_limit_is_413(small: TestClient) -> None:  # type: ignore[type-arg]
    """A body past `max_body_bytes` is a 413 in the route's dialect."""
    huge = {"model": "far-model", "messages": [{"role": "user", "content": "x" * 8000}]}
    openai_error(small.post("/v1/chat/completions", json=huge), 413)
    ollama_error(small.post("/api/chat", json=huge), 413)


def test_key_is_checked_before_the_body_limit(small: TestClient) -> None:  # type: ignore[type-arg]
    """A caller without a valid key learns nothing about the limits: 401, not 413."""
    huge = {"model": "far-model", "messages": [{"role": "user", "content": "x" * 8000}]}
    for path in ("/v1/chat/completions", "/v1/completions", "/api/chat"):
        r = small.post(path, json=huge, headers={"Authorization": "Bearer fbx_not_a_key"})
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["x-content-type-options"] == "nosniff"


def test_content_length_that_is_not_a_number_is_400(small: TestClient) -> None:  # type: ignore[type-arg]
    """A server that passes a bad Content-Length on (uvicorn's parser refuses it first) still
    gets a 400 from the completion routes, not a 500."""
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = small.post(path, content=b"{}", headers={"Content-Length": "2x"})
        assert "Content-Length" in openai_error(r, 400)["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_completion_routes_take_only_post(small: TestClient, path: str) -> None:  # type: ignore[type-arg]
    """Another method on a completion route is a 405 naming what is allowed; OPTIONS says it;
    a trailing slash names the same route."""
    for method in ("GET", "PUT", "DELETE"):
        r = small.request(method, path)
        openai_error(r, 405)
        assert r.headers["allow"] == "OPTIONS, POST"
    r = small.options(path)
    assert r.status_code == 204
    assert r.headers["allow"] == "OPTIONS, POST"
    body = {"model": "far-model", "messages": HI, "prompt": "hi"}
    assert "far-model" in openai_error(small.post(path + "/", json=body), 503)["message"]


def test_configured_max_tokens_limit(small: TestClient) -> None:  # type: ignore[type-arg]
    """`max_tokens_limit` from config is the bound the 400 names."""
    body = {"model": "far-model", "messages": HI, "max_tokens": 65}
    error = openai_error(small.post("/v1/chat/completions", json=body), 400)
    assert "64" in error["message"]


def test_unreachable_backend_is_503_with_retry_after(small: TestClient) -> None:  # type: ignore[type-arg]
    """A model whose only backend is down: 503 and Retry-After, in each dialect."""
    body = {"model": "far-model", "messages": HI, "prompt": "hi", "input": "hi", "stream": False}
    for path in ("/v1/chat/completions", "/v1/embeddings"):
        r = small.post(path, json=body)
        assert "far-model" in openai_error(r, 503)["message"]
        assert int(r.headers["retry-after"]) > 0
    for path in ("/api/chat", "/api/generate", "/api/embed"):
        r = small.post(path, json=body)
        assert "far-model" in ollama_error(r, 503)
        assert int(r.headers["retry-after"]) > 0
    ready = small.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["backends"] == {"remote": False}
