"""Every translation between dialects, in one place.

Inside the gateway everything is OpenAI-shaped. This module turns Ollama client requests
into that shape and answers back into Ollama's, and does the same for the Ollama backend's
native API. Nothing else in the gateway knows Ollama's field names.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from inference.backends.base import Json, Kind

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class TranslationError(ValueError):
    """A request that cannot be expressed in the other dialect (a 400)."""


# Sampling options with the same name in both dialects (Ollama keeps them in `options`).
_SHARED_OPTIONS = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty")

# --- Ollama client → canonical -------------------------------------------------------


def _options_to_openai(options: Any) -> Json:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TranslationError("options must be an object")
    out: Json = {name: options[name] for name in _SHARED_OPTIONS if name in options}
    predict = options.get("num_predict")
    if isinstance(predict, int) and predict > 0:
        out["max_tokens"] = predict
    return out


def _format_to_openai(fmt: Any) -> Json:
    if fmt in (None, ""):
        return {}
    if fmt == "json":
        return {"response_format": {"type": "json_object"}}
    if isinstance(fmt, dict):
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": fmt, "strict": True},
            }
        }
    raise TranslationError('format must be "json" or a JSON schema object')


def _message_to_openai(msg: Any) -> Json:
    if not isinstance(msg, dict):
        raise TranslationError("each message must be an object")
    out: Json = {"role": msg.get("role"), "content": msg.get("content", "")}
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": c.get("function", {}).get("name", ""),
                    "arguments": _encode(c.get("function", {}).get("arguments", {})).decode(),
                },
            }
            for i, c in enumerate(calls)
        ]
    return out


def from_ollama_chat(req: Json) -> Json:
    """An Ollama `/api/chat` request → a canonical chat request (stream defaults on)."""
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages is required and must be a list")
    out: Json = {
        "model": req.get("model"),
        "messages": [_message_to_openai(m) for m in messages],
        "stream": req.get("stream", True),
        **_options_to_openai(req.get("options")),
        **_format_to_openai(req.get("format")),
    }
    if req.get("tools"):
        out["tools"] = req["tools"]
    return out


def from_ollama_generate(req: Json) -> tuple[Kind, Json]:
    """An Ollama `/api/generate` request → a chat request (or a raw text completion)."""
    prompt = req.get("prompt")
    if not isinstance(prompt, str):
        raise TranslationError("prompt is required and must be a string")
    common: Json = {
        "model": req.get("model"),
        "stream": req.get("stream", True),
        **_options_to_openai(req.get("options")),
        **_format_to_openai(req.get("format")),
    }
    if req.get("raw"):
        return "completion", {**common, "prompt": prompt}
    messages: list[Json] = []
    if isinstance(req.get("system"), str) and req["system"]:
        messages.append({"role": "system", "content": req["system"]})
    messages.append({"role": "user", "content": prompt})
    return "chat", {**common, "messages": messages}


def from_ollama_embed(req: Json) -> Json:
    """An Ollama `/api/embed` request → a canonical embeddings request."""
    given = req.get("input")
    if not isinstance(given, str | list):
        raise TranslationError("input is required: a string or a list of strings")
    return {"model": req.get("model"), "input": given}


# --- canonical → Ollama client --------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tool_calls_to_ollama(calls: Any) -> list[Json]:
    out = []
    for call in calls or []:
        fn = call.get("function", {})
        args = fn.get("arguments", "{}")
        try:
            parsed = _decode(args) if isinstance(args, str) else args
        except msgspec.DecodeError:
            parsed = {"_raw": args}
        out.append({"function": {"name": fn.get("name", ""), "arguments": parsed}})
    return out


def _done_fields(reply: Json, elapsed_ns: int) -> Json:
    usage = reply.get("usage") or {}
    choice = (reply.get("choices") or [{}])[0]
    return {
        "done": True,
        "done_reason": choice.get("finish_reason") or "stop",
        "total_duration": elapsed_ns,
        "load_duration": 0,
        "prompt_eval_count": usage.get("prompt_tokens", 0),
        "prompt_eval_duration": 0,
        "eval_count": usage.get("completion_tokens", 0),
        "eval_duration": elapsed_ns,
    }


def to_ollama_chat(reply: Json, model: str, elapsed_ns: int) -> Json:
    """A canonical chat answer → Ollama's `/api/chat` answer."""
    choice = (reply.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    message: Json = {"role": "assistant", "content": msg.get("content") or ""}
    if msg.get("tool_calls"):
        message["tool_calls"] = _tool_calls_to_ollama(msg["tool_calls"])
    return {
        "model": model,
        "created_at": _now_iso(),
        "message": message,
        **_done_fields(reply, elapsed_ns),
    }


def to_ollama_generate(reply: Json, kind: Kind, model: str, elapsed_ns: int) -> Json:
    """A canonical chat or text answer → Ollama's `/api/generate` answer."""
    choice = (reply.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") if kind == "chat" else choice.get("text")
    return {
        "model": model,
        "created_at": _now_iso(),
        "response": text or "",
        **_done_fields(reply, elapsed_ns),
    }


def chunk_text(kind: Kind, chunk: Json) -> str:
    """The text a canonical stream chunk adds."""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    if kind == "chat":
        return str((choices[0].get("delta") or {}).get("content") or "")
    return str(choices[0].get("text") or "")


def to_ollama_chunk(kind: Kind, chunk: Json, model: str, generate: bool) -> Json | None:
    """A canonical stream chunk → an Ollama NDJSON line (None for chunks that add nothing)."""
    text = chunk_text(kind, chunk)
    calls = None
    choices = chunk.get("choices") or []
    if choices and kind == "chat":
        calls = (choices[0].get("delta") or {}).get("tool_calls")
    if not text and not calls:
        return None
    base: Json = {"model": model, "created_at": _now_iso(), "done": False}
    if generate:
        return {**base, "response": text}
    message: Json = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = _tool_calls_to_ollama(calls)
    return {**base, "message": message}


def ollama_final_chunk(
    model: str, generate: bool, finish: str | None, usage: Json, elapsed_ns: int
) -> Json:
    """The closing `done: true` line of an Ollama stream."""
    reply = {"choices": [{"finish_reason": finish}], "usage": usage}
    base: Json = {"model": model, "created_at": _now_iso(), **_done_fields(reply, elapsed_ns)}
    if generate:
        return {**base, "response": ""}
    return {**base, "message": {"role": "assistant", "content": ""}}


def to_ollama_embed(reply: Json, model: str) -> Json:
    """A canonical embeddings answer → Ollama's `/api/embed` answer."""
    return {
        "model": model,
        "embeddings": [d.get("embedding", []) for d in reply.get("data", [])],
        "prompt_eval_count": (reply.get("usage") or {}).get("prompt_tokens", 0),
    }


# --- canonical → Ollama backend (native API) and back -------------------------------


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def to_ollama_native(kind: Kind, body: Json, keep_alive: str) -> tuple[str, Json]:
    """A canonical request → (path, body) for an Ollama server's native API."""
    options: Json = {name: body[name] for name in _SHARED_OPTIONS if body.get(name) is not None}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    out: Json = {
        "model": body["model"],
        "stream": bool(body.get("stream")),
        "keep_alive": keep_alive,
    }
    if options:
        out["options"] = options
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            out["format"] = "json"
        elif fmt.get("type") == "json_schema":
            out["format"] = fmt.get("json_schema", {}).get("schema", {})
    if kind == "completion":
        return "/api/generate", {**out, "prompt": body.get("prompt", ""), "raw": True}
    messages = []
    for msg in body.get("messages", []):
        native: Json = {"role": msg.get("role"), "content": _content_text(msg.get("content"))}
        if msg.get("tool_calls"):
            native["tool_calls"] = _tool_calls_to_ollama(msg["tool_calls"])
        messages.append(native)
    out["messages"] = messages
    if body.get("tools"):
        out["tools"] = body["tools"]
    return "/api/chat", out


def _openai_tool_calls(calls: Any) -> list[Json]:
    return [
        {
            "id": f"call_{i}",
            "type": "function",
            "index": i,
            "function": {
                "name": c.get("function", {}).get("name", ""),
                "arguments": _encode(c.get("function", {}).get("arguments", {})).decode(),
            },
        }
        for i, c in enumerate(calls or [])
    ]


def _usage(data: Json) -> Json:
    prompt, completion = int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def from_ollama_native(kind: Kind, data: Json, reply_id: str) -> Json:
    """An Ollama native answer → a canonical (OpenAI) answer."""
    finish = data.get("done_reason") or "stop"
    common: Json = {"id": reply_id, "created": int(time.time()), "model": data.get("model", "")}
    if kind == "completion":
        choice: Json = {"index": 0, "text": data.get("response", ""), "finish_reason": finish}
        return {**common, "object": "text_completion", "choices": [choice], "usage": _usage(data)}
    msg = data.get("message") or {}
    message: Json = {"role": "assistant", "content": msg.get("content", "")}
    if msg.get("tool_calls"):
        message["tool_calls"] = _openai_tool_calls(msg["tool_calls"])
        finish = "tool_calls"
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return {**common, "object": "chat.completion", "choices": [choice], "usage": _usage(data)}


def from_ollama_native_chunk(kind: Kind, data: Json, reply_id: str) -> Json:
    """One Ollama NDJSON line → a canonical stream chunk (usage on the last one)."""
    done = bool(data.get("done"))
    finish = (data.get("done_reason") or "stop") if done else None
    common: Json = {"id": reply_id, "created": int(time.time()), "model": data.get("model", "")}
    if kind == "completion":
        choice: Json = {"index": 0, "text": data.get("response", ""), "finish_reason": finish}
        chunk: Json = {**common, "object": "text_completion", "choices": [choice]}
    else:
        msg = data.get("message") or {}
        delta: Json = {"role": "assistant", "content": msg.get("content", "")}
        if msg.get("tool_calls"):
            delta["tool_calls"] = _openai_tool_calls(msg["tool_calls"])
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk = {**common, "object": "chat.completion.chunk", "choices": [choice]}
    if done:
        chunk["usage"] = _usage(data)
    return chunk


def from_ollama_native_embed(data: Json, model: str) -> Json:
    """An Ollama `/api/embed` answer → a canonical embeddings answer."""
    vectors = data.get("embeddings") or []
    count = int(data.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }
