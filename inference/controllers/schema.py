"""The gateway's OpenAPI document at `/schema/openapi.json`, written by hand.

The model routes read their bodies raw (so that unknown fields reach the backend and a
forbidden one is refused before any translation), which leaves Litestar nothing to derive a
schema from. This document says what the validators in `inference.validation` accept, so that
clients and the fuzzer (`tests/system/test_fuzz.py`) see the same contract the code enforces;
a test checks that it names every route the app serves.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, get

from inference import __version__

Json = dict[str, Any]

_MODEL = {"type": "string", "minLength": 1, "examples": ["smollm2-135m"]}
_MAX_TOKENS = {"type": "integer", "minimum": 1, "maximum": 32768}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": "string"},
    },
}
_SAMPLING = {
    "model": _MODEL,
    "stream": {"type": "boolean"},
    "max_tokens": _MAX_TOKENS,
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
}
_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_OLLAMA_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_INPUT = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "string"}},
    ]
}


def _body(properties: Json, required: list[str]) -> Json:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answers(error: Json, media: str, codes: tuple[str, ...]) -> Json:
    out: Json = {"200": {"description": "OK", "content": {media: {"schema": {}}}}}
    for code in codes:
        out[code] = {"description": "error", "content": {"application/json": {"schema": error}}}
    return out


# 502/503/504 are the backend's failures and the router's backpressure, not the gateway's.
_CALL_ERRORS = ("400", "401", "403", "404", "413", "429", "502", "503", "504")


def _model_call(error: Json, body: Json, summary: str) -> Json:
    answers = _answers(error, "application/json", _CALL_ERRORS)
    return {"post": {"summary": summary, "requestBody": body, "responses": answers}}


def _read(summary: str, error: Json | None = None, media: str = "application/json") -> Json:
    codes = ("401", "403") if error is not None else ()
    return {"get": {"summary": summary, "responses": _answers(error or {}, media, codes)}}


def openapi_document() -> Json:
    """The OpenAPI 3.1 document of every gateway route."""
    chat = _body(
        {**_SAMPLING, "messages": {"type": "array", "minItems": 1, "items": _MESSAGE}},
        ["model", "messages"],
    )
    completion = _body({**_SAMPLING, "prompt": {"type": "string"}}, ["model", "prompt"])
    embeddings = _body({"model": _MODEL, "input": _INPUT}, ["model", "input"])
    ollama_opts = {"type": "object", "properties": {"num_predict": _MAX_TOKENS}}
    ollama_chat = _body(
        {
            "model": _MODEL,
            "stream": {"type": "boolean"},
            "options": ollama_opts,
            "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        },
        ["model", "messages"],
    )
    ollama_generate = _body(
        {
            "model": _MODEL,
            "stream": {"type": "boolean"},
            "options": ollama_opts,
            "prompt": {"type": "string"},
            "system": {"type": "string"},
            "raw": {"type": "boolean"},
        },
        ["model", "prompt"],
    )
    ollama_show = _body({"model": _MODEL}, ["model"])
    paths: Json = {
        "/health": _read("Liveness"),
        "/ready": _read("Readiness"),
        "/metrics": _read("Prometheus metrics", media="text/plain"),
        "/v1/chat/completions": _model_call(_OPENAI_ERROR, chat, "Chat completion"),
        "/v1/completions": _model_call(_OPENAI_ERROR, completion, "Text completion"),
        "/v1/embeddings": _model_call(_OPENAI_ERROR, embeddings, "Embeddings"),
        "/v1/models": _read("Models and aliases", _OPENAI_ERROR),
        "/v1/backends": _read("Backends, aliases and slots", _OPENAI_ERROR),
        "/api/chat": _model_call(_OLLAMA_ERROR, ollama_chat, "Ollama chat"),
        "/api/generate": _model_call(_OLLAMA_ERROR, ollama_generate, "Ollama generate"),
        "/api/embed": _model_call(_OLLAMA_ERROR, embeddings, "Ollama embeddings"),
        "/api/show": _model_call(_OLLAMA_ERROR, ollama_show, "What a model name is"),
        "/api/tags": _read("Ollama model list", _OLLAMA_ERROR),
        "/api/ps": _read("Models on healthy backends", _OLLAMA_ERROR),
        "/api/version": _read("Gateway version"),
        "/schema/openapi.json": _read("This document"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "fieldbox model gateway", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


class SchemaController(Controller):
    """Serves the document; open, like the api's `/schema`."""

    @get("/schema/openapi.json", sync_to_thread=False)
    def openapi(self) -> Json:
        """The gateway's OpenAPI document."""
        return openapi_document()
