"""`/admin/jobs`: the queue, a job's live progress and event log, retry, cancel, results."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Stream, Template

from appliance import jobs
from appliance.admin.jobview import frame_jpeg, results, scene_frames
from appliance.admin.site import back, page
from appliance.services import Services, Svc, in_thread
from store.errors import StoreError

_STATUSES = ("queued", "running", "failed", "dead", "succeeded", "cancelled")


def _job_page(
    svc: Services, job_id: str, track: int | None = None, frame: int | None = None
) -> dict[str, Any]:
    job = svc.queue.get(job_id)
    return {
        "job": job,
        "events": svc.queue.events(job_id),
        "results": results(job),
        "facts": scene_frames(svc, job, track, frame),
    }


class JobsController(Controller):
    """The job queue as the admin sees it."""

    path = "/jobs"

    @get("/", sync_to_thread=True)
    def list_jobs(
        self, request: Request[Any, Any, Any], svc: Svc, status: FromQuery[str] = ""
    ) -> Template:
        """Jobs newest first (all, or one status), with the count of each status."""
        chosen = status if status in _STATUSES else None
        items = svc.queue.list(status=chosen, limit=200)
        return page(
            request, "jobs.html", "jobs", jobs=items, counts=svc.queue.counts(), status=chosen or ""
        )

    @get("/{job_id:str}")
    async def job(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        svc: Svc,
        track: FromQuery[int | None] = None,
        frame: FromQuery[int | None] = None,
    ) -> Template:
        """One job: live progress, its event log, links to results, splat viewer, frames.

        `?track=N&frame=F` (an ask citation's link) picks the shown frame of track N nearest
        F, outlines it, scrolls to it and draws that track's box highlighted on it."""
        facts = await in_thread(_job_page, svc, job_id, track, frame)
        return page(request, "job.html", "jobs", **facts)

    @get("/{job_id:str}/events")
    async def events(self, job_id: FromPath[str], svc: Svc, after: FromQuery[int] = 0) -> Stream:
        """The job's server-sent events (the same feed as `/v1/jobs/{id}/events`)."""
        await in_thread(svc.queue.get, job_id)
        return Stream(
            jobs.event_stream(svc, job_id, max(0, after)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @get("/{job_id:str}/frames/{index:int}", sync_to_thread=True)
    def frame(
        self,
        job_id: FromPath[str],
        index: FromPath[int],
        svc: Svc,
        track: FromQuery[int | None] = None,
    ) -> Response[bytes]:
        """One frame the perception job kept, with its tracks' masks, boxes and ids (JPEG);
        `?track=N` outlines track N's box again, thick and white."""
        return Response(
            frame_jpeg(svc, svc.queue.get(job_id), index, track),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @post("/{job_id:str}/retry", sync_to_thread=True)
    def retry(self, request: Request[Any, Any, Any], job_id: FromPath[str], svc: Svc) -> Redirect:
        """Queue a failed, dead or cancelled job again."""
        try:
            svc.queue.retry(job_id)
        except StoreError as exc:
            return back(request, f"/admin/jobs/{job_id}", f"cannot retry: {exc}")
        return back(request, f"/admin/jobs/{job_id}", "job queued again")

    @post("/{job_id:str}/cancel", sync_to_thread=True)
    def cancel(self, request: Request[Any, Any, Any], job_id: FromPath[str], svc: Svc) -> Redirect:
        """Cancel a queued or running job."""
        try:
            svc.queue.cancel(job_id)
        except StoreError as exc:
            return back(request, f"/admin/jobs/{job_id}", f"cannot cancel: {exc}")
        return back(request, f"/admin/jobs/{job_id}", "cancel requested")
