"""Structured JSON logs with a request id on every line, and Prometheus metrics."""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from structlog.contextvars import bind_contextvars, clear_contextvars

from appliance.config import LogConfig

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")

Headers = Sequence[tuple[bytes, bytes]]
NOSNIFF: Headers = ((b"x-content-type-options", b"nosniff"),)
"""Sent on every response: no browser may guess a type we did not name (docs/security.md)."""


def nosniff_only(path: str) -> Headers:
    """The default header rule: `nosniff` on every path."""
    return NOSNIFF


def with_headers(headers: list[tuple[bytes, bytes]], extra: Headers) -> list[tuple[bytes, bytes]]:
    """`headers` plus each of `extra` whose name the response did not set itself."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *(pair for pair in extra if pair[0] not in present)]


class RecentEvents:
    """A bounded in-memory copy of this process's latest log events (the admin log view)."""

    def __init__(self) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=0)

    def keep(self, size: int) -> None:
        """Keep the last `size` events from now on (0 keeps none)."""
        self.events = deque(self.events, maxlen=size)

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Any:
        """structlog processor: remember a copy, pass the event on unchanged."""
        if self.events.maxlen:
            self.events.append({k: v for k, v in event.items() if k[:1] != "_"})
        return event


RECENT = RecentEvents()
"""The events of this process, once `RECENT.keep(n)` was called (the api does)."""


def configure_logging(cfg: LogConfig, process: str) -> None:
    """Send structlog and stdlib logging (uvicorn's too) to stdout as one JSON event per line."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if cfg.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # Our own events skip stdlib logging (it costs more than the request it describes):
    # rendered straight to bytes on stdout. Foreign (uvicorn) records take the stdlib path.
    direct: Any = (
        structlog.processors.JSONRenderer(serializer=_json_bytes)
        if cfg.format == "json"
        else _console_bytes(renderer)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_process(process),
        RECENT,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, direct],
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[cfg.level.upper()]
        ),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                _drop_color,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(cfg.level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Our own request event replaces uvicorn's access line.
    logging.getLogger("uvicorn.access").disabled = True
    # Their lifecycle chatter ("Started server process", "Adding job tentatively") is not
    # news at info; our own `*_started` events and sd_notify say when a process is up.
    for name in ("uvicorn.error", "apscheduler"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _json_bytes(obj: Any, **_: Any) -> bytes:
    return msgspec.json.encode(obj, enc_hook=str)


def _console_bytes(renderer: Any) -> Any:
    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> bytes:
        return str(renderer(logger, name, event)).encode()

    return render


def _drop_color(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # uvicorn attaches an ANSI-coloured copy of its message; journald wants plain text.
    event.pop("color_message", None)
    return event


def _add_process(process: str) -> Any:
    def add(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("process", process)
        return event

    return add


class HttpMetrics:
    """Requests and latency by route, in a registry of the process's own (not the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "fieldbox_http_requests_total",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fieldbox_http_request_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=self.registry,
        )
        # Labelled children, looked up once: `.labels()` takes a lock on every call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


class Metrics(HttpMetrics):
    """The Prometheus collectors of one api process."""

    def __init__(self) -> None:
        super().__init__()
        self.upload_bytes = Counter(
            "fieldbox_upload_bytes_total",
            "Bytes received by resumable uploads",
            registry=self.registry,
        )
        self.uploads_completed = Counter(
            "fieldbox_uploads_completed_total", "Uploads turned into assets", registry=self.registry
        )
        self.cas_conflicts = Counter(
            "fieldbox_document_precondition_failures_total",
            "Document writes refused because the ETag precondition failed",
            registry=self.registry,
        )
        self.disk_free = Gauge(
            "fieldbox_data_disk_free_bytes", "Free bytes on the data disk", registry=self.registry
        )


class RequestObserver:
    """ASGI wrapper: request id, one JSON log line and metrics for every HTTP request.

    It also adds `rule(path)`'s security headers to every response, the router's 404s and
    405s and the error handlers' answers included, unless the response set them itself.
    """

    def __init__(
        self, app: Any, metrics: HttpMetrics, rule: Callable[[str], Headers] = nosniff_only
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.rule = rule
        self.log = structlog.get_logger("fieldbox.http")
        self._prefix = secrets.token_hex(4)
        self._counter = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        if _SAFE_REQUEST_ID.match(incoming):
            request_id = incoming
        else:
            # A random per-process prefix and a counter: unique, with no syscall per request.
            self._counter += 1
            request_id = f"{self._prefix}{self._counter:08x}"
        clear_contextvars()
        bind_contextvars(request_id=request_id)
        status = 500
        start = time.perf_counter()

        async def observed_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"x-request-id", request_id.encode()), *self.rule(scope["path"])]
                message["headers"] = with_headers(list(message.get("headers") or ()), extra)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("path_template") or "unmatched"
            self.metrics.observe_request(scope["method"], route, status, elapsed)
            self.log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route,
                status=status,
                ms=round(elapsed * 1000, 2),
            )
            clear_contextvars()
