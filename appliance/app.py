"""`create_app`: the only place the field API is assembled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from appliance import __version__, ask_index
from appliance.admin import AdminSite, admin_router, admin_templates
from appliance.admin.headers import api_headers
from appliance.auth import authorize
from appliance.config import FieldboxConfig
from appliance.controllers.ask import AskController
from appliance.controllers.assets import AssetController
from appliance.controllers.documents import DocumentController
from appliance.controllers.health import HealthController
from appliance.controllers.jobs import JobController
from appliance.controllers.locations import LocationController
from appliance.controllers.projects import ProjectController
from appliance.controllers.uploads import UploadController
from appliance.errors import EXCEPTION_HANDLERS
from appliance.observe import RECENT, Metrics, RequestObserver
from appliance.services import Services, in_thread
from store.errors import NotFound


def _provide_services(state: State) -> Services:
    svc: Services = state.svc
    return svc


async def _sweep_uploads(svc: Services) -> None:
    log = structlog.get_logger("fieldbox.uploads")
    while True:
        await asyncio.sleep(svc.cfg.api.cleanup_interval_s)
        try:
            removed = await in_thread(svc.uploads.expire)  # each under its upload's lock
            if removed:
                log.info("uploads_expired", count=removed)
                for upload_id in list(svc.upload_hashes):  # drop the swept ones' hashers
                    try:
                        svc.uploads.get(upload_id)
                    except NotFound:
                        svc.upload_hashes.pop(upload_id, None)
        except Exception as exc:  # the sweeper must outlive a bad pass
            log.warning("upload_sweep_failed", error=repr(exc))


def create_app(cfg: FieldboxConfig) -> Litestar:
    """Build the field API for one config; resources open in the lifespan, close after it."""
    metrics = Metrics()
    stopping = threading.Event()
    admin = AdminSite.build(cfg)
    RECENT.keep(cfg.admin.log_events)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        svc = await in_thread(Services.open, cfg, metrics, stopping)
        app.state.svc = svc
        sweeper = asyncio.create_task(_sweep_uploads(svc))
        indexer = asyncio.create_task(
            ask_index.keep_current(svc.layout, svc.locations, svc.gateway_calls, svc.index_wake)
        )
        try:
            yield
        finally:
            for task in (indexer, sweeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await svc.gateway_calls.close()
            svc.close()

    app = Litestar(
        route_handlers=[
            HealthController,
            LocationController,
            DocumentController,
            UploadController,
            AssetController,
            ProjectController,
            AskController,
            JobController,
            *([admin_router()] if cfg.admin.enabled else []),
        ],
        template_config=admin_templates(),
        dependencies={"svc": Provide(_provide_services, sync_to_thread=False, use_cache=True)},
        before_request=authorize,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan, admin.lifespan] if cfg.admin.enabled else [lifespan],
        openapi_config=OpenAPIConfig(
            title="fieldbox field API",
            version=__version__,
            path="/schema",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}],
        ),
        request_max_body_size=cfg.api.max_document_bytes + 64 * 1024,
        state=State({"stopping": stopping, "admin": admin}),
        debug=False,
        logging_config=None,
    )
    # Wrap outside Litestar's router so unmatched routes get a request id and a log line too.
    app.asgi_handler = RequestObserver(app.asgi_handler, metrics, api_headers)
    return app
