"""Worker status files: each worker writes `workers/{id}.json`; the api reads them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from store.paths import Layout

STALE_AFTER_S = 30.0


def status_dir(layout: Layout) -> Path:
    """Where worker processes leave their status."""
    return layout.root / "workers"


def write_status(layout: Layout, worker_id: str, status: dict[str, Any]) -> None:
    """Replace a worker's status file atomically (readers never see half of it)."""
    folder = status_dir(layout)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{worker_id}.tmp"
    tmp.write_text(json.dumps({**status, "worker_id": worker_id, "updated_at": time.time()}))
    os.replace(tmp, folder / f"{worker_id}.json")


def remove_status(layout: Layout, worker_id: str) -> None:
    """A worker that stopped cleanly removes its file."""
    (status_dir(layout) / f"{worker_id}.json").unlink(missing_ok=True)


def read_statuses(layout: Layout) -> list[dict[str, Any]]:
    """Every worker's last status, with `alive` false when it has not written for a while."""
    out: list[dict[str, Any]] = []
    folder = status_dir(layout)
    if not folder.is_dir():
        return out
    now = time.time()
    for path in sorted(folder.glob("*.json")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
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
