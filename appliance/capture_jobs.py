"""The jobs a capture upload queues by itself (`[worker] auto_enqueue_capture`).

Its own module, on `store.queue` alone: `services` queues them when an upload becomes an
asset, and `jobs` (the api's view of jobs) builds on `services`, so imports run one way.
"""

from __future__ import annotations

from store.queue import Job, Queue


def enqueue_capture_jobs(
    queue: Queue, asset_id: str, location: str, *, photos: bool = False
) -> list[Job]:
    """A perception and a splat job for a capture upload (a splat job only for a photo
    capture: perception tracks objects through video); idempotent per asset, so a
    repeated finalize (a retried last PATCH, a restart) queues nothing twice."""
    return [
        queue.enqueue(
            kind,
            {"asset_id": asset_id, "params": {}},
            location=location,
            idempotency_key=f"capture:{asset_id}:{kind}",
        )[0]
        for kind in (("splat",) if photos else ("perception", "splat"))
    ]
