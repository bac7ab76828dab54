"""Worker status files (`workers/{id}.json`, read by the api) and the box's drain flag.

The drain flag is a file, `{data}/drain`: a draining box's workers finish (or, when
stopped, release) what they run and claim nothing new. It outlives restarts on purpose,
so a box drained for maintenance stays drained until someone says otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from store.db import read_json, replace_file
from store.paths import Layout
from store.queue import Job, Queue

STALE_AFTER_S = 30.0


def status_dir(layout: Layout) -> Path:
    """Where worker processes leave their status."""
    return layout.workers_dir


def write_status(layout: Layout, worker_id: str, status: dict[str, Any]) -> None:
    """Replace a worker's status file atomically (readers never see half of it)."""
    body = {**status, "worker_id": worker_id, "updated_at": time.time()}
    replace_file(layout.worker_status(worker_id), json.dumps(body))


def remove_status(layout: Layout, worker_id: str) -> None:
    """A worker that stopped cleanly removes its file."""
    layout.worker_status(worker_id).unlink(missing_ok=True)


def read_statuses(layout: Layout) -> list[dict[str, Any]]:
    """Every worker's last status, with `alive` false when it has not written for a while."""
    out: list[dict[str, Any]] = []
    folder = status_dir(layout)
    if not folder.is_dir():
        return out
    now = time.time()
    for path in sorted(folder.glob("*.json")):
        status = read_json(path)
        if status is None:
            continue
        status["alive"] = now - float(status.get("updated_at", 0)) < STALE_AFTER_S
        out.append(status)
    return out


def gpu_status() -> dict[str, Any] | None:
    """The GPU's name and memory in use, when torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return {
        "name": torch.cuda.get_device_name(0),
        "memory_used_bytes": int(total - free),
        "memory_total_bytes": int(total),
    }


def drain_path(layout: Layout) -> Path:
    """The drain flag's file under the data root."""
    return layout.drain_flag


def set_drain(layout: Layout, reason: str = "") -> None:
    """Start draining: workers claim no new jobs from now on (idempotent)."""
    body = {"since": time.time(), "reason": reason, "pid": os.getpid()}
    replace_file(drain_path(layout), json.dumps(body))


def clear_drain(layout: Layout) -> bool:
    """Stop draining; True if the box was draining."""
    try:
        drain_path(layout).unlink()
    except FileNotFoundError:
        return False
    return True


def is_draining(layout: Layout) -> bool:
    """True while the drain flag is set."""
    return drain_path(layout).exists()


def running_here(queue: Queue, host: str | None = None) -> list[Job]:
    """Running jobs held by a worker on this host that is still alive.

    Worker ids are `{host}-{pid}-{random}`. A lease can lapse while its worker lives (a
    heartbeat stalled on a busy box; the next one renews it), so a live process counts
    too; a lease left by a dead worker holds nothing up once it has expired.
    """
    prefix = f"{host or socket.gethostname()}-"
    now = time.time()
    return [
        job
        for job in queue.list(status="running", limit=1000)
        if (job.lease_owner or "").startswith(prefix)
        and ((job.lease_expires or 0) > now or _process_alive(job.lease_owner or ""))
    ]


def _process_alive(worker_id: str) -> bool:
    parts = worker_id.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except PermissionError:
        return True  # it exists, under another user (the fieldbox service user)
    except OSError:
        return False
    return True
