"""One model call from admission to telemetry: pick a target, fall back, stream, record.

Controllers parse and answer in their dialect; everything between (routing, limits, the
breaker, metrics, the telemetry spool, schema checks) happens here, once for both dialects.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from inference.access import Caller
from inference.backends.base import BackendError, Json, Kind, Reply
from inference.limits import Deferred, Saturated
from inference.metrics import GatewayMetrics
from inference.router import Lane, NoTarget, Router
from inference.translate import chunk_text
from inference.validation import answer_problem
from store.telemetry import Spool

T = TypeVar("T")


@dataclass
class Call:
    """What one request asks for and on whose behalf."""

    caller: Caller
    endpoint: str
    dialect: str
    requested: str
    stream: bool = False
    schema: Json | None = None
    background: bool = False
    """Asked with RFC 9218 `Priority: u=7`: put off while chats run (embeddings only)."""
    started: float = field(default_factory=time.perf_counter)


@dataclass
class StreamState:
    """What a stream produced so far; read by the controller after the last chunk."""

    backend: str = ""
    model: str = ""
    text: list[str] = field(default_factory=list)
    usage: Json = field(default_factory=dict)
    finish: str | None = None
    error: str | None = None


class Gateway:
    """The service the controllers call."""

    def __init__(
        self,
        router: Router,
        metrics: GatewayMetrics,
        spool: Spool | None,
        capture: bool,
        background_quiet_s: float = 2.0,
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.spool = spool
        self.capture = capture
        self.background_quiet_s = background_quiet_s
        self.log = structlog.get_logger("fieldbox.gateway")
        # Chat and completion calls running now, and when the last one ended: background
        # calls wait for both (`_deferral`).
        self._generating = 0
        self._generated_at = -math.inf

    def _generation_ended(self) -> None:
        self._generating -= 1
        self._generated_at = time.monotonic()

    def _deferral(self) -> int:
        """Seconds a background call should wait; 0 once no chat ran for the quiet time."""
        if self._generating:
            return max(1, math.ceil(self.background_quiet_s))
        left = self._generated_at + self.background_quiet_s - time.monotonic()
        return math.ceil(left) if left > 0 else 0

    # --- admission and fallback -----------------------------------------------------

    async def _admit(self, lane: Lane) -> None:
        try:
            await lane.limiter.acquire()
        except Saturated:
            lane.breaker.abandon()
            self.metrics.child(self.metrics.rejected, "busy").inc()
            raise
        finally:
            self._gauges(lane)

    def _release(self, lane: Lane, seconds: float | None) -> None:
        lane.limiter.release(seconds)
        self._gauges(lane)

    def _gauges(self, lane: Lane) -> None:
        name = lane.backend.name
        self.metrics.child(self.metrics.queue_depth, name).set(lane.limiter.waiting)
        self.metrics.child(self.metrics.in_flight, name).set(lane.limiter.active)

    async def _first_working(
        self, call: Call, needs: tuple[str, ...], attempt: Callable[[Lane, str], Awaitable[T]]
    ) -> tuple[Lane, str, T]:
        """Run `attempt` on each usable target in turn until one works; the lane stays held."""
        tried: list[str] = []
        for lane, model in self.router.candidates(call.requested, needs):
            if not lane.breaker.allows():
                continue
            await self._admit(lane)
            try:
                result = await attempt(lane, model)
            except BackendError as exc:
                self._release(lane, None)
                self._failed(call, lane, exc)
                if not exc.retryable:
                    raise
                tried.append(f"{lane.backend.name}: {exc.message}")
                continue
            except BaseException:
                self._release(lane, None)
                raise
            lane.breaker.success()
            return lane, model, result
        if tried:
            raise BackendError(502, "every backend failed: " + "; ".join(tried), retryable=False)
        raise NoTarget(f"every backend for {call.requested!r} is out of rotation; retry soon")

    def _failed(self, call: Call, lane: Lane, exc: BackendError) -> None:
        if exc.retryable:
            lane.breaker.failure()
        reason = "upstream" if exc.retryable else f"status_{exc.status}"
        self.metrics.child(self.metrics.errors, lane.backend.name, call.requested, reason).inc()
        self.log.warning(
            "backend_call_failed",
            backend=lane.backend.name,
            model=call.requested,
            status=exc.status,
            retryable=exc.retryable,
            error=exc.message,
        )

    # --- the three kinds of call ----------------------------------------------------

    async def generate(self, call: Call, kind: Kind, body: Json) -> tuple[Reply, str]:
        """A whole answer (non-streamed); returns it and the backend's name."""
        needs = _needs(kind, body, call.schema)

        async def attempt(lane: Lane, model: str) -> Reply:
            reply = await lane.backend.generate(kind, {**body, "model": model})
            if call.schema is not None:
                self._check_answer(call.schema, kind, reply.body)
            return reply

        self._generating += 1
        try:
            lane, model, reply = await self._first_working(call, needs, attempt)
        finally:
            self._generation_ended()
        seconds = time.perf_counter() - call.started
        self._release(lane, seconds)
        usage = reply.body.get("usage") or {}
        text = _reply_text(kind, reply.body) if self.capture else None
        self._done(call, lane.backend.name, model, body, usage, seconds, None, text, None)
        return reply, lane.backend.name

    def _check_answer(self, schema: Json, kind: Kind, body: Json) -> None:
        choice = (body.get("choices") or [{}])[0]
        if choice.get("finish_reason") == "length":
            return  # cut short by max_tokens: the client sees why
        problem = answer_problem(schema, _reply_text(kind, body))
        if problem:
            raise BackendError(502, problem, retryable=True)

    async def open_stream(
        self, call: Call, kind: Kind, body: Json
    ) -> tuple[StreamState, AsyncGenerator[list[Json], None]]:
        """Start a stream; fall back until a target yields its first chunks.

        Each item of the stream is the chunks that came in together (never empty).
        """
        needs = _needs(kind, body, call.schema)
        state = StreamState()

        async def attempt(
            lane: Lane, model: str
        ) -> tuple[AsyncGenerator[list[Json], None], list[Json] | None]:
            batches = lane.backend.stream(kind, {**body, "model": model, "stream": True})
            try:
                first = await anext(batches)
            except StopAsyncIteration:
                first = None
            return batches, first

        self._generating += 1  # until the relay's end, or now if no target starts
        try:
            lane, model, (batches, first) = await self._first_working(call, needs, attempt)
        except BaseException:
            self._generation_ended()
            raise
        state.backend, state.model = lane.backend.name, model
        want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return state, self._relay(call, kind, body, lane, state, batches, first, want_usage)

    async def _relay(
        self,
        call: Call,
        kind: Kind,
        body: Json,
        lane: Lane,
        state: StreamState,
        batches: AsyncGenerator[list[Json], None],
        first: list[Json] | None,
        want_usage: bool,
    ) -> AsyncGenerator[list[Json], None]:
        ttft: float | None = None
        keep_text = self.capture or call.schema is not None
        try:
            batch = first
            while batch is not None:
                out: list[Json] = []
                for chunk in batch:
                    if chunk.get("usage"):
                        state.usage = chunk["usage"]
                    choices = chunk.get("choices") or []
                    if choices and choices[0].get("finish_reason"):
                        state.finish = choices[0]["finish_reason"]
                    text = chunk_text(kind, chunk)
                    if text and ttft is None:
                        ttft = time.perf_counter() - call.started
                    if text and keep_text:
                        state.text.append(text)
                    if choices or want_usage:  # else a usage-only chunk not asked for
                        out.append(chunk)
                if out:
                    yield out
                batch = await anext(batches, None)
            if call.schema is not None and state.finish != "length":
                state.error = answer_problem(call.schema, "".join(state.text))
        except BackendError as exc:
            # Bytes already went out: no fallback now; the client gets an error event.
            state.error = exc.message
            lane.breaker.failure()
            self.log.warning("stream_broken", backend=lane.backend.name, error=exc.message)
        finally:
            # The upstream call ends here, not whenever the generator is collected.
            await batches.aclose()
            seconds = time.perf_counter() - call.started
            self._release(lane, seconds)
            self._generation_ended()
            if ttft is not None:
                self.metrics.child(self.metrics.ttft, lane.backend.name, call.requested).observe(
                    ttft
                )
            captured = "".join(state.text) if self.capture else None
            self._done(
                call,
                lane.backend.name,
                state.model,
                body,
                state.usage,
                seconds,
                ttft,
                captured,
                state.error,
            )

    async def embed(self, call: Call, body: Json) -> tuple[Json, str]:
        """Embeddings; returns the answer and the backend's name.

        A background call is refused (`Deferred`) while any chat or completion runs and for
        `background_quiet_s` after the last: the api's ask indexer embeds between questions,
        not beside them, on cores the chat model needs.
        """
        if call.background and (wait := self._deferral()):
            self.metrics.child(self.metrics.rejected, "deferred").inc()
            raise Deferred(wait)

        async def attempt(lane: Lane, model: str) -> Json:
            return await lane.backend.embed({**body, "model": model})

        lane, model, reply = await self._first_working(call, ("embeddings",), attempt)
        seconds = time.perf_counter() - call.started
        self._release(lane, seconds)
        self._done(call, lane.backend.name, model, body, reply.get("usage") or {}, seconds)
        return reply, lane.backend.name

    # --- bookkeeping ------------------------------------------------------------------

    def _done(
        self,
        call: Call,
        backend: str,
        model: str,
        body: Json,
        usage: Json,
        seconds: float,
        ttft: float | None = None,
        text: str | None = None,
        error: str | None = None,
    ) -> None:
        m, alias = self.metrics, call.requested
        m.child(m.requests, backend, alias, call.endpoint).inc()
        m.child(m.latency, backend, alias).observe(seconds)
        tokens_in = int(usage.get("prompt_tokens") or 0)
        tokens_out = int(usage.get("completion_tokens") or 0)
        m.child(m.tokens, backend, alias, "in").inc(tokens_in)
        m.child(m.tokens, backend, alias, "out").inc(tokens_out)
        if error:
            m.child(m.errors, backend, alias, "stream").inc()
        if self.spool is None:
            return
        record: dict[str, Any] = {
            "ts": time.time(),
            "request_id": structlog.contextvars.get_contextvars().get("request_id"),
            "caller": call.caller.name,
            "via": call.caller.via,
            "endpoint": call.endpoint,
            "dialect": call.dialect,
            "alias": alias,
            "backend": backend,
            "model": model,
            "stream": call.stream,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "latency_ms": round(seconds * 1000, 3),
            "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
            "error": error,
        }
        if self.capture:
            record["request"] = {
                k: body[k] for k in ("messages", "prompt", "input", "tools") if k in body
            }
            record["response"] = text
        self.spool.append(record)


def _needs(kind: Kind, body: Json, schema: Json | None) -> tuple[str, ...]:
    needs: list[str] = [kind]
    if schema is not None:
        needs.append("json_schema")
    if body.get("tools"):
        needs.append("tools")
    return tuple(needs)


def _reply_text(kind: Kind, body: Json) -> str:
    choice = (body.get("choices") or [{}])[0]
    if kind == "chat":
        return str((choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")
