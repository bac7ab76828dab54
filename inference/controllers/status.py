"""Liveness, readiness and Prometheus metrics of the gateway; open to anyone who can reach it."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference import __version__
from inference.backends.base import Json
from inference.metrics import GatewayMetrics
from inference.router import Router


class StatusController(Controller):
    """Probes for systemd, Ansible and Prometheus."""

    @get("/health")
    async def health(self) -> Json:
        """Liveness: the process answers."""
        return {"ok": True, "process": "gateway", "version": __version__}

    @get("/ready")
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Json]:
        """Readiness: at least one backend is healthy."""
        router: Router = request.app.state.router
        backends = {s.backend.name: s.health.ok for s in router.lanes.values()}
        ok = router.ready()
        return Response({"ok": ok, "backends": backends}, status_code=200 if ok else 503)

    @get("/metrics", sync_to_thread=False)
    def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Prometheus text format."""
        metrics: GatewayMetrics = request.app.state.metrics
        router: Router = request.app.state.router
        for lane in router.lanes.values():
            metrics.child(metrics.backend_up, lane.backend.name).set(1 if lane.health.ok else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
