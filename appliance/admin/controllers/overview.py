"""`/admin`: is the box healthy, and what is it doing."""

from __future__ import annotations

import platform
import time
from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from appliance import __version__
from appliance.admin.boxstate import overview, this_api
from appliance.admin.site import page, session_of
from appliance.services import Services, Svc, in_thread


def _overview(svc: Services, token: str) -> dict[str, Any]:
    api = this_api(svc.layout, svc.started_at)
    facts = overview(svc.cfg, svc.layout, svc.outbox, svc.queue, api, token)
    return {
        **facts,
        "python": platform.python_version(),
        "host": platform.node(),
        "uptime_s": time.time() - svc.started_at,
    }


class OverviewController(Controller):
    """The first page: processes, machine, last sync."""

    path = "/"

    @get("/")
    async def overview(self, request: Request[Any, Any, Any], svc: Svc) -> Template:
        """Version, uptime, each process's health and restarts, CPU/RAM/disk/GPU, last sync."""
        facts = await in_thread(_overview, svc, session_of(request).token)
        return page(request, "overview.html", "overview", app_version=__version__, **facts)
