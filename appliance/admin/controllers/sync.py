"""`/admin/sync`: what the box still owes S3, how the bridge is doing, and "sync now"."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template

from appliance.admin.site import back, page, site_of
from appliance.admin.syncing import sync_facts
from appliance.services import Svc, in_thread


class SyncController(Controller):
    """The bridge as the admin sees it."""

    path = "/sync"

    @get("/")
    async def sync(self, request: Request[Any, Any, Any], svc: Svc) -> Template:
        """Backlog over time, throughput, Litestream lag, spool, windows, last errors."""
        site = site_of(request)
        facts = await in_thread(sync_facts, svc.cfg, svc.layout, svc.outbox)
        series = site.sampler.series() if site.sampler else {"t": []}
        return page(
            request,
            "sync.html",
            "sync",
            series=series,
            last_pass=site.sync_now.last,
            pass_running=site.sync_now.running,
            **facts,
        )

    @post("/now")
    async def now(self, request: Request[Any, Any, Any]) -> Redirect:
        """Start one uploader pass over the whole backlog (retry delays ignored)."""
        return back(request, "/admin/sync", site_of(request).sync_now.start())
