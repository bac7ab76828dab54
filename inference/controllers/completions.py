"""`POST /v1/chat/completions` and `/v1/completions` as plain ASGI, ahead of Litestar.

These two routes carry nearly every model call a box serves, and a framework's request
and response objects cost more CPU than the proxying itself (docs/performance.md); on a box
those cores also run llama.cpp, SAM2 and the splat trainer. What the hook and controllers
do for the other routes happens here in the same order: method, access (401 before 413),
body limit, the same checks and the same `Gateway` calls, errors in OpenAI's shape.
Every other path goes on to Litestar unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from typing import Any, cast

import msgspec

from inference.access import Access
from inference.backends.base import Json, Kind
from inference.config import GatewayConfig
from inference.controllers.common import call_for
from inference.errors import error_body, failure_of
from inference.service import Gateway, StreamState
from inference.validation import (
    RequestError,
    check_chat,
    check_completion,
    decode_body,
)

_encode = msgspec.json.Encoder().encode
ROUTES: dict[str, tuple[Kind, str]] = {
    "/v1/chat/completions": ("chat", "chat"),
    "/v1/completions": ("completion", "completions"),
}
"""Path -> (the kind of call, the endpoint name in metrics and telemetry)."""

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_JSON = (b"content-type", b"application/json")
_ALLOW = (b"allow", b"OPTIONS, POST")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    _NOSNIFF,
]
_DONE = b"data: [DONE]\n\n"
_MOST_EVENTS_PER_WRITE = 256  # an upstream far ahead of its client still streams


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class CompletionRoutes:
    """ASGI wrapper: the two completion routes here, everything else to `app`."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        # The Litestar app's state: the gateway and the access rules appear in its lifespan.
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI connection."""
        # As Litestar's router does, a trailing slash names the same route.
        path = scope["path"].rstrip("/") if scope["type"] == "http" else ""
        route = ROUTES.get(path)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["path_template"] = path
        if scope["method"] != "POST":
            await _method(scope, send)
            return
        try:
            await self._serve(scope, receive, send, *route)
        except ClientGone:
            return
        except Exception as exc:
            status, message, param, headers = failure_of(exc)
            extra = [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
            await _whole(
                send, status, _encode(error_body(scope["path"], status, message, param)), extra
            )

    async def _serve(self, scope: Any, receive: Any, send: Any, kind: Kind, endpoint: str) -> None:
        access: Access = self.state.access
        gateway: Gateway = self.state.gateway
        cfg: GatewayConfig = self.state.config
        caller = await access.check_scope(scope)
        body = decode_body(await _body(scope, receive, cfg.max_body_bytes))
        # Each check refuses an upstream-choosing field first, before any other.
        if kind == "chat":
            check_chat(body, cfg.max_tokens_limit)
        else:
            check_completion(body, cfg.max_tokens_limit)
        call = call_for(caller, endpoint, "openai", body)
        if not call.stream:
            reply, _ = await gateway.generate(call, kind, body)
            await _whole(send, 200, reply.raw if reply.raw is not None else _encode(reply.body))
            return
        state, batches = await gateway.open_stream(call, kind, body)
        await _stream(scope["path"], receive, send, state, batches)


async def _body(scope: Any, receive: Any, limit: int) -> bytes:
    """The request body, or a 413 as soon as it is known to be past `limit`."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            # uvicorn's parser refuses one that is not a number; other ASGI servers may not.
            if not value.isdigit():
                raise RequestError("Content-Length must be a number of bytes")
            if int(value) > limit:
                raise RequestError("Request Entity Too Large", status=413)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise RequestError("Request Entity Too Large", status=413)
        parts.append(part)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def _whole(
    send: Any, status: int, content: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [_JSON, (b"content-length", str(len(content)).encode()), _NOSNIFF, *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def _method(scope: Any, send: Any) -> None:
    if scope["method"] == "OPTIONS":
        await send({"type": "http.response.start", "status": 204, "headers": [_ALLOW, _NOSNIFF]})
        await send({"type": "http.response.body", "body": b""})
        return
    content = _encode(error_body(scope["path"], 405, "Method Not Allowed"))
    await _whole(send, 405, content, [_ALLOW])


async def _stream(
    path: str,
    receive: Any,
    send: Any,
    state: StreamState,
    batches: AsyncGenerator[list[Json], None],
) -> None:
    """Relay `batches` as server-sent events; a client that leaves stops the upstream call.

    Events that are in at once go out in one write, the response's head with the first
    (httplimits): a write is a system call, and an upstream that sends several chunks in
    one packet would otherwise cost one per chunk. Nothing waits to be batched: whatever is
    in goes out before the next wait.
    """
    task = asyncio.current_task()
    streaming, left = True, False
    rest: _Rest | None = None

    def on_message(done: asyncio.Future[Any]) -> None:
        nonlocal left
        # After the body, the only message an ASGI server sends is a disconnect.
        if streaming and task is not None and not done.cancelled() and not done.exception():
            left = True
            task.cancel()

    watch = asyncio.ensure_future(receive())
    watch.add_done_callback(on_message)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        out: list[bytes] = []
        try:
            while True:
                try:
                    batch, rest = _step(batches)
                    if rest is not None:
                        if out:
                            await send(_piece(b"".join(out)))
                            out.clear()
                        batch = await rest
                        rest = None
                except StopAsyncIteration:
                    rest = None
                    break
                out.extend(map(_event, batch))
                if len(out) >= _MOST_EVENTS_PER_WRITE:
                    await send(_piece(b"".join(out)))
                    out.clear()
            # A failure after the first byte: an error event, then the stream ends (no [DONE]).
            error = state.error
        except Exception as exc:
            rest = None
            error = failure_of(exc)[1]
        out.append(_DONE if error is None else _event(error_body(path, 502, error)))
        streaming = False
        await send({"type": "http.response.body", "body": b"".join(out)})
    except asyncio.CancelledError:
        if not left:
            raise
        if task is not None:
            task.uncancel()
    finally:
        streaming = False
        watch.remove_done_callback(on_message)
        watch.cancel()
        if rest is not None:
            rest.abandon()
        # The relay's own finally frees its place at the backend and writes the telemetry.
        await batches.aclose()


def _event(data: Any) -> bytes:
    return b"data: " + _encode(data) + b"\n\n"


def _piece(body: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": body, "more_body": True}


def _step(
    batches: AsyncGenerator[list[Json], None],
) -> tuple[list[Json], _Rest | None]:
    """The next batch if it is in without waiting, else what to await for it.

    Runs the generator's next step up to its first wait: what is already buffered upstream
    comes back at once (StopAsyncIteration at the end), as `anext` would give it.
    """
    step = batches.__anext__().__await__()
    try:
        waiting_on = step.send(None)
    except StopIteration as done:
        return done.value, None
    return [], _Rest(step, waiting_on)


class _Rest:
    """The rest of a step that had to wait: awaiting it hands the wait to the running task
    and goes on from there, exactly as if the step had been awaited from its start."""

    __slots__ = ("step", "waiting_on")

    def __init__(self, step: Generator[Any, None, list[Json]], waiting_on: Any) -> None:
        self.step = step
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, None, list[Json]]:
        step, waiting_on = self.step, self.waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                step.close()
                raise
            except BaseException as exc:
                # A cancellation (or anything thrown into the task) goes on inward.
                try:
                    waiting_on = step.throw(exc)
                except StopIteration as done:
                    return cast(list[Json], done.value)
                continue
            try:
                waiting_on = step.send(sent)
            except StopIteration as done:
                return cast(list[Json], done.value)

    def abandon(self) -> None:
        """Cancel the step where it waits (the stream was cut before it was awaited)."""
        try:
            self.step.throw(asyncio.CancelledError())
        except BaseException:
            pass  # it ends however it ends: the stream is cut either way
        else:
            self.step.close()
