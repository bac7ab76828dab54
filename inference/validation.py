"""Checking what clients send before anything is routed, and answers against their schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import msgspec

from inference.backends.base import Json

# Fields through which a client could choose where a request goes or with whose
# credentials (LiteLLM's CVE history): upstreams come from config only.
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "azure_endpoint",
        "azure_ad_token",
        "custom_llm_provider",
        "endpoint",
        "upstream",
        "url",
        "host",
        "proxy",
        "headers",
        "extra_headers",
        "litellm_params",
        "organization",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_region_name",
        "vertex_credentials",
    }
)
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})


class RequestError(ValueError):
    """A request that cannot be served as sent (a 4xx); `param` names the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def decode_body(raw: bytes) -> Json:
    """The JSON object a request carries, or RequestError."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise RequestError(f"body is not valid JSON: {exc}") from None
    except RecursionError as exc:
        raise RequestError(f"body is JSON nested too deeply: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("body must be a JSON object")
    return body


def check_forbidden(body: Json) -> None:
    """Refuse any field through which a client could pick an upstream or credentials."""
    bad = sorted(FORBIDDEN_FIELDS.intersection(body))
    if bad:
        raise RequestError(
            f"field {bad[0]!r} is not accepted: upstreams and credentials come from the"
            " box's config, never from a request",
            param=bad[0],
        )


def _common(body: Json, max_tokens_limit: int) -> None:
    check_forbidden(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model is required and must be a string", param="model")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not value >= 1:
            raise RequestError(f"{name} must be a positive integer", param=name)
        if value > max_tokens_limit:
            raise RequestError(f"{name} must be at most {max_tokens_limit}", param=name)
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestError("stream must be true or false", param="stream")
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or not 0 <= temperature <= 2
    ):
        raise RequestError("temperature must be a number from 0 to 2", param="temperature")


def check_chat(body: Json, max_tokens_limit: int) -> None:
    """A chat completion request: model, messages, limits, response_format, tools."""
    _common(body, max_tokens_limit)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages is required: a non-empty list", param="messages")
    for i, msg in enumerate(messages):
        # isinstance first: an object or array role is unhashable, and `in` would raise.
        role = msg.get("role") if isinstance(msg, dict) else None
        if not isinstance(role, str) or role not in _ROLES:
            raise RequestError(
                f"messages[{i}] needs a role (one of {', '.join(sorted(_ROLES))})",
                param=f"messages[{i}]",
            )
        content = msg.get("content")
        if content is not None and not isinstance(content, str | list):
            raise RequestError(f"messages[{i}].content must be text", param=f"messages[{i}]")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise RequestError("tools must be a list", param="tools")
    schema_of(body)


def check_completion(body: Json, max_tokens_limit: int) -> None:
    """A text completion request: model and a prompt string."""
    _common(body, max_tokens_limit)
    if not isinstance(body.get("prompt"), str):
        raise RequestError("prompt is required and must be a string", param="prompt")
    schema_of(body)


def check_embeddings(body: Json) -> None:
    """An embeddings request: model and input (a string or a list of strings)."""
    _common(body, 1)
    given = body.get("input")
    ok = (isinstance(given, str) and given) or (
        isinstance(given, list) and given and all(isinstance(x, str) for x in given)
    )
    if not ok:
        raise RequestError("input must be a non-empty string or list of strings", param="input")


def schema_of(body: Json) -> Json | None:
    """The JSON schema a request constrains its answer to (json_object → any object)."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise RequestError(
            "response_format.type must be text, json_object or json_schema",
            param="response_format",
        )
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "object"}
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise RequestError(
            "response_format.json_schema.schema must be a JSON Schema object",
            param="response_format",
        )
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise RequestError(
            f"response_format.json_schema.schema is not a valid JSON Schema: {exc.message}",
            param="response_format",
        ) from None
    return schema


def answer_problem(schema: Json, text: str) -> str | None:
    """Why `text` is not a JSON document matching `schema`, or None when it is."""
    try:
        value: Any = msgspec.json.decode(text.encode())
    except msgspec.DecodeError:
        return "the answer is not JSON"
    except RecursionError:
        return "the answer is JSON nested too deeply"
    error = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(schema)(schema).iter_errors(value)
    )
    return None if error is None else f"the answer does not match the schema: {error.message}"
