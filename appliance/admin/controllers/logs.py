"""`/admin/logs`: recent structured log events, filtered by level, process and text."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromQuery
from litestar.response import Template

from appliance.admin.logview import LEVELS, recent, source
from appliance.admin.site import page
from appliance.services import Svc


class LogsController(Controller):
    """The log view."""

    path = "/logs"

    @get("/", sync_to_thread=True)
    def logs(
        self,
        request: Request[Any, Any, Any],
        svc: Svc,
        level: FromQuery[str] = "",
        process: FromQuery[str] = "",
        q: FromQuery[str] = "",
    ) -> Template:
        """Newest first: every process's events under `fieldbox up`, else the api's own."""
        lines, processes = recent(svc.layout, level=level, process=process, text=q.strip())
        return page(
            request,
            "logs.html",
            "logs",
            lines=lines,
            processes=processes,
            levels=LEVELS,
            level=level,
            process=process,
            q=q,
            source=source(svc.layout),
        )
