"""`/v1/jobs`: queue perception and splat jobs for a video asset, follow them, cancel, retry."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Stream

from appliance import jobs
from appliance.auth import FIELD_ACCESS
from appliance.errors import ApiError
from appliance.schemas import JobCreate, JobList, WorkerList
from appliance.services import Svc, in_thread
from appliance.worker_status import read_statuses
from store.paths import is_decimal
from store.queue import Job

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class JobController(Controller):
    """Long perception and splat jobs on the box's durable queue."""

    path = "/v1/jobs"
    tags = ["jobs"]
    opt = FIELD_ACCESS

    @post("/", status_code=202)
    async def create(self, data: JSONBody[JobCreate], svc: Svc) -> Response[Job]:
        """Queue a job (202); the same `idempotency_key` again returns the same job (200)."""
        job, created = await jobs.enqueue(svc, data)
        return Response(job, status_code=202 if created else 200)

    @get("/", sync_to_thread=True)
    def list_jobs(
        self,
        svc: Svc,
        status: FromQuery[str | None] = None,
        kind: FromQuery[str | None] = None,
        location: FromQuery[str | None] = None,
        limit: Limit = 100,
    ) -> JobList:
        """Jobs, newest first, filtered by status, kind or location; counts per status."""
        items = svc.queue.list(status=status, kind=kind, location=location, limit=limit)
        return JobList(items=items, counts=svc.queue.counts())

    @get("/workers", sync_to_thread=True)
    def workers(self, svc: Svc) -> WorkerList:
        """Each worker's last status: jobs running, warm models, GPU memory when present."""
        return WorkerList(items=read_statuses(svc.layout))

    @get("/{job_id:str}", sync_to_thread=True)
    def read(self, job_id: FromPath[str], svc: Svc) -> Job:
        """One job."""
        return svc.queue.get(job_id)

    @post("/{job_id:str}/cancel", status_code=200, sync_to_thread=True)
    def cancel(self, job_id: FromPath[str], svc: Svc) -> Job:
        """Cancel: a queued job at once, a running one as soon as its worker notices."""
        return svc.queue.cancel(job_id)

    @post("/{job_id:str}/retry", status_code=200, sync_to_thread=True)
    def retry(self, job_id: FromPath[str], svc: Svc) -> Job:
        """Queue a failed, dead or cancelled job again (409 for any other state)."""
        return svc.queue.retry(job_id)

    @get("/{job_id:str}/events")
    async def events(
        self, job_id: FromPath[str], request: Request[Any, Any, Any], svc: Svc
    ) -> Stream:
        """Server-sent events: replayed after `Last-Event-ID` (or `?after=`), then live
        until the job ends."""
        await in_thread(svc.queue.get, job_id)  # 404 before the stream starts
        raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        if not is_decimal(raw) or len(raw) > 18:
            raise ApiError(400, "Last-Event-ID must be an event id (a number)")
        return Stream(
            jobs.event_stream(svc, job_id, int(raw)),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )
