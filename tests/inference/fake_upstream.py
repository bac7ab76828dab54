"""A controllable fake model server: OpenAI, vLLM, mlx_lm and Ollama APIs in one process.

Run it as its own process (`python -m tests.inference.fake_upstream --port N`); one process
plays any number of upstreams, each under its own path prefix and with its own state:

    http://127.0.0.1:N/u/{name}/v1/chat/completions   (the upstream called `name`)
    http://127.0.0.1:N/v1/chat/completions            (the upstream called `default`)

So a vLLM backend has `url = "http://127.0.0.1:N/u/gpu/v1"` (its `/health` and `/metrics`
are at `/u/gpu/health`, `/u/gpu/metrics`), an Ollama backend `url = "http://127.0.0.1:N/u/ol"`.

Served (after the prefix): `POST /v1/chat/completions` (SSE when `stream`), `/v1/completions`,
`/v1/embeddings`, `GET /v1/models`; vLLM's and mlx's `GET /health`, vLLM's `GET /metrics`;
Ollama's `POST /api/chat`, `/api/generate` (NDJSON when `stream`), `/api/embed`,
`GET /api/version`, `/api/tags`. `/v1` may be left out of the OpenAI paths.

Every answer says who gave it: the text is `hello from {name}` (streamed as three pieces),
or, when the request carries a JSON schema (`response_format`, vLLM's `structured_outputs` /
`guided_json`, Ollama's `format`), a JSON document matching that schema whose strings are
`from {name}`.

Control, per upstream:
- `POST /u/{name}/_control` with any of
  `{"mode": "ok" | "fail500" | "fail" | "refuse" | "slow" | "hold" | "die_mid_stream"
   | "trickle", "status": 401, "delay_s": 0.5, "healthy": true, "release": true,
   "reset": true, "running": 3, "waiting": 7}`.
  Modes (model calls only): `fail500` answers with a 500 (`fail` with `status`); `refuse`
  drops the connection without an answer; `slow` waits `delay_s` before answering; `hold`
  waits until a control call says `release` (which also sets the mode back to `ok`);
  `die_mid_stream` sends the first piece of a stream, then drops the connection; `trickle`
  streams numbered pieces without end, one every `delay_s`.
  `healthy: false` makes the health endpoints (`/health`, `/v1/models`, `/api/version`)
  answer 503; `reset` forgets what was recorded; `running`/`waiting` are what `/metrics`
  reports.
- `GET /u/{name}/_requests` → `{"count", "requests", "probes", "streams_cut"}`: every model
  call received, as `{"path", "body", "authorization", "port"}` (recorded on arrival, whatever the
  mode did with it), the paths of every other GET, and how many streams the client (the
  gateway) cut off before their end.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

Json = dict[str, Any]
MODES = frozenset({"ok", "fail500", "fail", "refuse", "slow", "hold", "die_mid_stream", "trickle"})
_encode = msgspec.json.encode


@dataclass
class Upstream:
    """The state of one fake upstream."""

    name: str
    mode: str = "ok"
    delay_s: float = 0.0
    status: int = 500
    healthy: bool = True
    running: float = 3.0
    waiting: float = 7.0
    requests: list[Json] = field(default_factory=list)
    streams_cut: int = 0
    probes: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def text(self) -> str:
        """What this upstream answers."""
        return f"hello from {self.name}"

    def pieces(self) -> list[str]:
        """The answer as stream pieces."""
        return ["hello", " from", f" {self.name}"]


class FakeUpstreams:
    """Every named upstream of this process."""

    def __init__(self) -> None:
        self.upstreams: dict[str, Upstream] = {}

    def get(self, name: str) -> Upstream:
        """The upstream called `name` (created on first use)."""
        found = self.upstreams.get(name)
        if found is None:
            found = self.upstreams[name] = Upstream(name)
        return found

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request to its upstream and endpoint."""
        path = request.path
        name = "default"
        if path.startswith("/u/"):
            name, _, rest = path[3:].partition("/")
            path = "/" + rest
        up = self.get(name)
        if path == "/_control" and request.method == "POST":
            return self.control(up, await _json(request))
        if path == "/_requests" and request.method == "GET":
            return web.json_response(
                {
                    "count": len(up.requests),
                    "requests": up.requests,
                    "probes": up.probes,
                    "streams_cut": up.streams_cut,
                }
            )
        if path.startswith("/v1/"):
            path = path[3:]
        if request.method == "GET":
            up.probes.append(path)
            return self.probe(up, path)
        if request.method != "POST":
            return _error(405, "method not allowed")
        if path not in _MODEL_PATHS:
            return _error(404, f"no such endpoint {path}")
        body = await _json(request)
        auth = request.headers.get("Authorization")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        port = peer[1] if peer else None  # the caller's port: which connection it came over
        up.requests.append({"path": path, "body": body, "authorization": auth, "port": port})
        return await self.model_call(up, path, body, request)

    def control(self, up: Upstream, body: Json) -> web.Response:
        """Change how an upstream behaves."""
        if "mode" in body:
            if body["mode"] not in MODES:
                return _error(400, f"mode must be one of {sorted(MODES)}")
            up.mode = str(body["mode"])
            if up.mode == "hold":
                up.gate.clear()
        if "delay_s" in body:
            up.delay_s = float(body["delay_s"])
        if "status" in body:
            up.status = int(body["status"])
        if "healthy" in body:
            up.healthy = bool(body["healthy"])
        if "running" in body:
            up.running = float(body["running"])
        if "waiting" in body:
            up.waiting = float(body["waiting"])
        if body.get("reset"):
            up.requests.clear()
            up.probes.clear()
        if body.get("release"):
            up.mode = "ok"
            up.gate.set()
        return web.json_response(
            {"name": up.name, "mode": up.mode, "healthy": up.healthy, "delay_s": up.delay_s}
        )

    def probe(self, up: Upstream, path: str) -> web.Response:
        """Health, model lists, metrics, version."""
        if path in ("/health", "/models", "/api/version") and not up.healthy:
            return _error(503, f"{up.name} is unhealthy")
        if path == "/health":
            return web.Response(text="")
        if path == "/models":
            return web.json_response(
                {
                    "object": "list",
                    "data": [{"id": f"{up.name}-model", "object": "model", "owned_by": "fake"}],
                }
            )
        if path == "/metrics":
            text = (
                "# HELP vllm:num_requests_running Number of requests running.\n"
                "# TYPE vllm:num_requests_running gauge\n"
                f'vllm:num_requests_running{{model_name="{up.name}-model"}} {up.running}\n'
                "# HELP vllm:num_requests_waiting Number of requests waiting.\n"
                "# TYPE vllm:num_requests_waiting gauge\n"
                f'vllm:num_requests_waiting{{model_name="{up.name}-model"}} {up.waiting}\n'
            )
            return web.Response(text=text, content_type="text/plain")
        if path == "/api/version":
            return web.json_response({"version": "0.9.0"})
        if path == "/api/tags":
            return web.json_response({"models": [{"name": f"{up.name}-model", "size": 0}]})
        return _error(404, f"no such endpoint {path}")

    async def model_call(
        self, up: Upstream, path: str, body: Json, request: web.Request
    ) -> web.StreamResponse:
        """Answer a model call as the upstream's mode says."""
        if up.mode in ("fail500", "fail"):
            status = 500 if up.mode == "fail500" else up.status
            return _error(status, f"{up.name} failed on purpose ({status})")
        if up.mode == "refuse" or (up.mode == "die_mid_stream" and not _streams(path, body)):
            return _drop(request)
        if up.mode == "slow":
            await asyncio.sleep(up.delay_s)
        if up.mode == "hold":
            await up.gate.wait()
        if path == "/embeddings":
            return web.json_response(_openai_embeddings(body))
        if path == "/api/embed":
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            return web.json_response(
                {
                    "model": body.get("model"),
                    "embeddings": [_vector(i) for i in range(count)],
                    "prompt_eval_count": 4 * count,
                }
            )
        text = _answer_text(up, path, body)
        if not _streams(path, body):
            return web.json_response(_whole(path, body, text))
        return await self.stream(up, path, body, text, request)

    async def stream(
        self, up: Upstream, path: str, body: Json, text: str, request: web.Request
    ) -> web.StreamResponse:
        """SSE (OpenAI) or NDJSON (Ollama), piece by piece."""
        ollama = path.startswith("/api/")
        resp = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson" if ollama else "text/event-stream"}
        )
        await resp.prepare(request)
        pieces = up.pieces() if text == up.text() else [text]
        if up.mode == "trickle":
            pieces = [f" {i}" for i in range(_TRICKLE_PIECES)]
        for i, piece in enumerate(pieces):
            chunk = _ollama_piece(path, body, piece) if ollama else _openai_piece(path, body, piece)
            try:
                await resp.write(_frame(chunk, ollama))
            except (ConnectionError, asyncio.CancelledError):
                up.streams_cut += 1  # the client (the gateway) went away mid-stream
                raise
            if i == 0 and up.mode == "die_mid_stream":
                await asyncio.sleep(0.05)  # let the first piece reach the gateway
                return _drop(request, resp)
            if up.mode == "trickle":
                await asyncio.sleep(up.delay_s)
        if ollama:
            await resp.write(_frame(_ollama_final(path, body), True))
        else:
            await resp.write(_frame(_openai_final(path, body), False))
            if (body.get("stream_options") or {}).get("include_usage"):
                await resp.write(_frame(_openai_usage_chunk(path, body), False))
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


_MODEL_PATHS = frozenset(
    {"/chat/completions", "/completions", "/embeddings", "/api/chat", "/api/generate", "/api/embed"}
)
_TRICKLE_PIECES = 10_000
_USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


async def _json(request: web.Request) -> Json:
    raw = await request.read()
    if not raw:
        return {}
    data = msgspec.json.decode(raw)
    return data if isinstance(data, dict) else {"_body": data}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "fake_error"}}, status=status)


def _drop(request: web.Request, resp: web.StreamResponse | None = None) -> web.StreamResponse:
    """Cut the connection: the client sees it closed with no (or half an) answer."""
    if request.transport is not None:
        request.transport.abort()
    return resp if resp is not None else web.Response(status=500)


def _streams(path: str, body: Json) -> bool:
    if path in ("/embeddings", "/api/embed"):
        return False
    if path.startswith("/api/"):
        return bool(body.get("stream", True))
    return bool(body.get("stream"))


def _schema_of(body: Json) -> Json | None:
    """The JSON schema a request asks its answer to follow, in any dialect."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            return schema if isinstance(schema, dict) else {"type": "object"}
        if fmt.get("type") == "json_object":
            return {"type": "object"}
    structured = body.get("structured_outputs")
    if isinstance(structured, dict) and isinstance(structured.get("json"), dict):
        schema = structured["json"]
        return schema if isinstance(schema, dict) else None
    if isinstance(body.get("guided_json"), dict):
        guided: Json = body["guided_json"]
        return guided
    fmt = body.get("format")
    if isinstance(fmt, dict):
        return fmt
    if fmt == "json":
        return {"type": "object"}
    return None


def _example(schema: Any, name: str) -> Any:
    """A value matching a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: _example(sub, name) for key, sub in props.items()}
    if kind == "array":
        return [_example(schema.get("items") or {}, name)]
    if kind == "string":
        return f"from {name}"
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    return None


def _answer_text(up: Upstream, path: str, body: Json) -> str:
    schema = _schema_of(body)
    if schema is None:
        return up.text()
    return _encode(_example(schema, up.name)).decode()


def _vector(i: int) -> list[float]:
    return [0.25 + i, -0.5, 0.125]


def _openai_embeddings(body: Json) -> Json:
    """As OpenAI and vLLM answer: floats, or base64 of float32s when asked (the official
    client asks for base64 unless told otherwise)."""
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    vectors: list[Any] = [_vector(i) for i in range(count)]
    if body.get("encoding_format") == "base64":
        vectors = [base64.b64encode(array.array("f", v).tobytes()).decode() for v in vectors]
    return {
        "object": "list",
        "model": body.get("model"),
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": 4 * count, "total_tokens": 4 * count},
    }


def _whole(path: str, body: Json, text: str) -> Json:
    model = body.get("model")
    now = int(time.time())
    if path == "/chat/completions":
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": now,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
        }
    if path == "/completions":
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": now,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": _USAGE,
        }
    done: Json = {
        "model": model,
        "created_at": "2024-01-01T00:00:00Z",
        "done": True,
        "done_reason": "stop",
        "total_duration": 1000,
        "load_duration": 0,
        "prompt_eval_count": 5,
        "prompt_eval_duration": 10,
        "eval_count": 3,
        "eval_duration": 10,
    }
    if path == "/api/chat":
        return {**done, "message": {"role": "assistant", "content": text}}
    return {**done, "response": text}


def _openai_piece(path: str, body: Json, piece: str) -> Json:
    if path == "/completions":
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}],
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}
        ],
    }


def _openai_final(path: str, body: Json) -> Json:
    chunk = _openai_piece(path, body, "")
    chunk["choices"][0]["finish_reason"] = "stop"
    if path != "/completions":
        chunk["choices"][0]["delta"] = {}
    return chunk


def _openai_usage_chunk(path: str, body: Json) -> Json:
    chunk = _openai_piece(path, body, "")
    chunk["choices"] = []
    chunk["usage"] = _USAGE
    return chunk


def _ollama_piece(path: str, body: Json, piece: str) -> Json:
    base: Json = {"model": body.get("model"), "created_at": "2024-01-01T00:00:00Z", "done": False}
    if path == "/api/chat":
        return {**base, "message": {"role": "assistant", "content": piece}}
    return {**base, "response": piece}


def _ollama_final(path: str, body: Json) -> Json:
    return _whole(path, body, "")


def _frame(chunk: Json, ollama: bool) -> bytes:
    if ollama:
        return _encode(chunk) + b"\n"
    return b"data: " + _encode(chunk) + b"\n\n"


def make_app() -> web.Application:
    """The aiohttp application of one fake-upstream process."""
    fakes = FakeUpstreams()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fakes.handle)
    return app


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.inference.fake_upstream --port N`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
