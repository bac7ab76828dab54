"""Liveness, readiness, version and Prometheus metrics; open to anyone on the LAN."""

from __future__ import annotations

import os
import platform
import secrets
import time
from typing import Any

from litestar import Controller, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from appliance import __version__
from appliance.schemas import Health, Readiness, VersionInfo
from appliance.services import Svc
from bridge.daemon import read_status


class HealthController(Controller):
    """Probes for the fleet operator and for systemd/Ansible."""

    tags = ["health"]

    @get("/health", sync_to_thread=True)
    def health(self, svc: Svc) -> Health:
        """Liveness: the process answers; with the bridge's last status when there is one."""
        return Health(
            ok=True,
            process="api",
            version=__version__,
            uptime_s=time.time() - svc.started_at,
            bridge=read_status(svc.layout),
        )

    @get("/ready", sync_to_thread=True)
    def ready(self, svc: Svc) -> Response[Readiness]:
        """Readiness: data dir writable, databases open, enough free disk."""
        checks: dict[str, str] = {}
        probe = svc.layout.tmp_dir / f".ready-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            checks["data_dir"] = "ok"
        except OSError as exc:
            checks["data_dir"] = f"not writable: {exc.strerror}"
        try:
            svc.uploads.db.read().execute("SELECT 1").fetchone()
            svc.keys.read().execute("SELECT 1").fetchone()
            checks["databases"] = "ok"
        except Exception as exc:
            checks["databases"] = f"error: {exc}"
        free = svc.free_disk_bytes()
        floor = svc.cfg.store.min_free_disk_mb * 1024 * 1024
        checks["disk"] = "ok" if free >= floor else f"only {free // 2**20} MiB free"
        ok = all(v == "ok" for v in checks.values())
        return Response(Readiness(ok=ok, checks=checks), status_code=200 if ok else 503)

    @get("/version")
    async def version(self) -> VersionInfo:
        """Name and version of the running release."""
        return VersionInfo(name="fieldbox", version=__version__, python=platform.python_version())

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics(self, svc: Svc) -> Response[Any]:
        """Prometheus text exposition of this process's metrics."""
        svc.free_disk_bytes()
        return Response(
            generate_latest(svc.metrics.registry),
            media_type=CONTENT_TYPE_LATEST,
            headers={"Cache-Control": "no-store", "X-Pid": str(os.getpid())},
        )
