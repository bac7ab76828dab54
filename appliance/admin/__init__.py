"""The local admin page at `/admin`, served by the api process (docs/admin.md).

`admin_router()` is everything under `/admin` (one controller per section, the static
files), behind `gate.admin_gate`; `admin_templates()` is the app's Jinja2 config;
`AdminSite` holds the sessions and the samplers, started by `AdminSite.lifespan`.
"""

from __future__ import annotations

from litestar import Router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from appliance.admin.controllers.access import AccessController
from appliance.admin.controllers.assets import AssetsController
from appliance.admin.controllers.auth import AuthController
from appliance.admin.controllers.jobs import JobsController
from appliance.admin.controllers.logs import LogsController
from appliance.admin.controllers.models import ModelsController
from appliance.admin.controllers.overview import OverviewController
from appliance.admin.controllers.sync import SyncController
from appliance.admin.gate import admin_gate
from appliance.admin.site import STATIC, TEMPLATES, VENDOR, AdminSite
from appliance.admin.templating import environment

__all__ = ["AdminSite", "admin_router", "admin_templates"]


def admin_router() -> Router:
    """Every route under `/admin`, each behind the admin gate."""
    static = create_static_files_router(
        path="/static",
        directories=[STATIC, VENDOR],
        name="admin-static",
        include_in_schema=False,
    )
    return Router(
        path="/admin",
        route_handlers=[
            AuthController,
            OverviewController,
            ModelsController,
            JobsController,
            SyncController,
            AssetsController,
            AccessController,
            LogsController,
            static,
        ],
        before_request=admin_gate,
        include_in_schema=False,
    )


def admin_templates() -> TemplateConfig[JinjaTemplateEngine]:
    """The Jinja2 engine for the admin templates (autoescaped, with the page's filters)."""
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment(TEMPLATES)))
