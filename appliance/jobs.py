"""Jobs as the api sees them: checking a request before it is queued, and the SSE event feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from appliance.jobparams import job_config, named
from appliance.schemas import JobCreate
from appliance.services import Services, in_thread
from store import ingest
from store.errors import InvalidDocument
from store.queue import TERMINAL, Job

_TERMINAL_EVENTS = frozenset({"succeeded", "failed", "dead", "cancelled"})
_encode = msgspec.json.Encoder().encode


def _probe(path: Path, kind: str, filename: str) -> None:
    from perception.progress import InvalidInput
    from perception.splat.photos import check_photo_capture, is_photo_capture
    from perception.video import probe

    if is_photo_capture(path):
        if kind != "splat":
            raise InvalidDocument(f"a photo capture (ZIP) can go to a splat job, not {kind}")
        try:
            check_photo_capture(path)
        except InvalidInput as exc:
            why = named(exc, path, filename)
            raise InvalidDocument(f"the asset is not a usable photo capture: {why}") from exc
        return
    try:
        probe(path)
    except InvalidInput as exc:
        why = named(exc, path, filename)
        raise InvalidDocument(f"the asset is not a usable video: {why}") from exc


async def enqueue(svc: Services, req: JobCreate) -> tuple[Job, bool]:
    """Queue a job for an asset: kind, params and the asset's video or photos are checked first."""
    job_config(req.kind, req.params, svc.cfg)  # checked and capped before anything is queued
    params = req.params
    asset, path = await in_thread(ingest.asset_file, svc.layout, svc.locations, req.asset_id)
    await in_thread(_probe, path, req.kind, asset.filename)
    return await in_thread(
        svc.queue.enqueue,
        req.kind,
        {"asset_id": asset.id, "params": params},
        location=asset.location,
        priority=req.priority,
        idempotency_key=req.idempotency_key,
    )


async def event_stream(svc: Services, job_id: str, after: int) -> AsyncIterator[bytes]:
    """Server-sent events of a job: replay after `after`, then follow until the job ends.

    The queue lives in another process's writes, so new events are polled (every 0.25 s);
    a comment line every 15 s keeps proxies from closing an idle stream.
    """
    last, idle = after, 0.0
    while not svc.stopping.is_set():
        events = await in_thread(svc.queue.events, job_id, last)
        for ev in events:
            last = ev.seq
            payload = {"job_id": ev.job_id, "type": ev.type, "at": ev.at, **ev.data}
            yield b"id: %d\nevent: %s\ndata: %s\n\n" % (ev.seq, ev.type.encode(), _encode(payload))
        if events:
            idle = 0.0
            if events[-1].type in _TERMINAL_EVENTS:
                return
            continue
        job = await in_thread(svc.queue.get, job_id)
        if job.status in TERMINAL:
            return
        await asyncio.sleep(0.25)
        idle += 0.25
        if idle >= 15:
            idle = 0.0
            yield b": keep-alive\n\n"
