"""The admin site's state in the api process, and what every page handler shares."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar, Request
from litestar.response import Redirect, Template

from appliance import __version__
from appliance.admin.series import Sampler
from appliance.admin.sessions import CSRF_FIELD, Session, SessionStore
from appliance.admin.syncing import SyncNow
from appliance.config import FieldboxConfig
from appliance.services import Services
from store.paths import Layout

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
VENDOR = HERE / "vendor" / "node_modules"
"""npm packages the Makefile installs (gitignored): uPlot for the charts."""

SECTIONS = (
    ("overview", "Overview", "/admin"),
    ("models", "Models", "/admin/models"),
    ("jobs", "Jobs", "/admin/jobs"),
    ("sync", "Sync", "/admin/sync"),
    ("assets", "Locations & assets", "/admin/assets"),
    ("access", "Tunnel & access", "/admin/access"),
    ("logs", "Logs", "/admin/logs"),
)


@dataclass
class AdminSite:
    """Sessions, the backlog sampler and the sync-now runner of one api process."""

    cfg: FieldboxConfig
    sessions: SessionStore
    sync_now: SyncNow
    sampler: Sampler | None = None
    started_at: float = field(default_factory=time.time)

    @classmethod
    def build(cls, cfg: FieldboxConfig) -> AdminSite:
        """The site for one config (stores come later, in `attach`)."""
        a = cfg.admin
        store = SessionStore(a.session_idle_minutes * 60, a.session_max_hours * 3600)
        return cls(cfg, store, SyncNow(cfg, Layout(cfg.data_dir)))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """Sample the outbox while the api runs (after its stores opened)."""
        svc: Services = app.state.svc
        self.sampler = Sampler(svc.layout, svc.outbox)
        task = asyncio.create_task(self.sampler.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(self.sampler.close)


def site_of(request: Request[Any, Any, Any]) -> AdminSite:
    """The admin site of the app serving `request`."""
    site: AdminSite = request.app.state.admin
    return site


def session_of(request: Request[Any, Any, Any]) -> Session:
    """The signed-in session the gate checked for this request."""
    session: Session = request.state.admin_session
    return session


def page(request: Request[Any, Any, Any], name: str, section: str, **context: Any) -> Template:
    """Render `name` inside the admin layout, with the session's CSRF token and messages."""
    session = session_of(request)
    flash, session.flash = session.flash, []
    return Template(
        template_name=name,
        context={
            "section": section,
            "sections": SECTIONS,
            "version": __version__,
            "csrf": session.csrf,
            "csrf_field": CSRF_FIELD,
            "who": session.key_name,
            "flash": flash,
            **context,
        },
        headers={"Cache-Control": "no-store"},
    )


def back(request: Request[Any, Any, Any], to: str, message: str = "") -> Redirect:
    """Redirect after a form post (303), with a message for the next page."""
    if message:
        session_of(request).flash.append(message)
    return Redirect(to, status_code=303)
