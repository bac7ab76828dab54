"""What the admin overview shows: each process's health and restarts, the machine, the GPU.

Sources, all read on each page view (nothing here writes):
- `up/status.json`, written by `fieldbox up`'s supervisor: pids, restart counts, ports;
- `workers/*.json` (appliance.worker_status), `bridge/status.json` (bridge.daemon.read_status);
- the gateway's `/health`, `/ready` and `/v1/backends` on its port (from `up`, else config);
- `/proc` for load and memory, `shutil.disk_usage` for the data disk, `nvidia-smi` for a GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import FieldboxConfig
from appliance.supervisor import read_up_status
from appliance.worker_status import is_draining, read_statuses
from bridge.daemon import read_status
from store.outbox import Outbox
from store.paths import Layout
from store.queue import Queue


@dataclass(frozen=True)
class HttpResult:
    """One small JSON call to another local process."""

    status: int
    body: Any
    error: str = ""

    @property
    def ok(self) -> bool:
        """True for a 2xx with a JSON body."""
        return 200 <= self.status < 300 and self.error == ""


def http_json(url: str, *, token: str = "", body: Any = None, timeout: float = 2.0) -> HttpResult:
    """GET (or POST `body` as JSON) `url`; never raises, the error is in the result."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, json.loads(resp.read() or b"null"))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"null")
        except ValueError:
            detail = None
        message = detail.get("message", "") if isinstance(detail, dict) else ""
        return HttpResult(exc.code, detail, message or f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        return HttpResult(0, None, str(getattr(exc, "reason", exc)))


def gateway_url(cfg: FieldboxConfig, up: dict[str, Any] | None) -> str:
    """Where the gateway listens: the port `fieldbox up` gave it, else the configured one."""
    for child in (up or {}).get("children", []):
        if child.get("name") == "gateway" and child.get("health_url"):
            return str(child["health_url"]).removesuffix("/health")
    host = cfg.gateway.host if cfg.gateway.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{cfg.gateway.port}"


@dataclass(frozen=True)
class ProcessRow:
    """One line of the overview's process table."""

    name: str
    state: str  # "ok", "down", "degraded" or "unknown"
    detail: str
    pid: int | None = None
    restarts: int | None = None
    uptime_s: float | None = None


def _child(up: dict[str, Any] | None, name: str) -> dict[str, Any]:
    for child in (up or {}).get("children", []):
        if child.get("name") == name:
            return dict(child)
    return {}


def _supervised(up: dict[str, Any] | None, name: str) -> dict[str, Any]:
    child = _child(up, name)
    now = time.time()
    started = child.get("started_at")
    return {
        "pid": child.get("pid"),
        "restarts": child.get("restarts"),
        "uptime_s": now - float(started) if child.get("running") and started else None,
    }


def api_url(cfg: FieldboxConfig, up: dict[str, Any] | None) -> str:
    """Where the field API listens: the port `fieldbox up` gave it, else the configured one."""
    for child in (up or {}).get("children", []):
        if child.get("name") == "api" and child.get("health_url"):
            return str(child["health_url"]).removesuffix("/health")
    host = cfg.api.host if cfg.api.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{cfg.api.port}"


def this_api(layout: Layout, started_at: float) -> ProcessRow:
    """The api row as the api itself gives it (it is answering: it serves the page)."""
    restarts = _supervised(read_up_status(layout), "api")["restarts"]
    return ProcessRow(
        "api", "ok", "answering (this page)", os.getpid(), restarts, time.time() - started_at
    )


def probed_api(cfg: FieldboxConfig, layout: Layout) -> ProcessRow:
    """The api row as another process sees it: its /health, with what `up` says of it."""
    up = read_up_status(layout)
    url = api_url(cfg, up)
    health = http_json(url + "/health")
    detail = f"{url}: " + ("answering" if health.ok else health.error)
    return ProcessRow("api", "ok" if health.ok else "down", detail, **_supervised(up, "api"))


def processes(
    cfg: FieldboxConfig, layout: Layout, api: ProcessRow, gateway: dict[str, Any]
) -> list[ProcessRow]:
    """api, gateway, each worker, bridge and each model backend, with health and restarts."""
    up = read_up_status(layout)
    rows = [api]
    health: HttpResult = gateway["health"]
    rows.append(
        ProcessRow(
            "gateway",
            "ok" if health.ok else "down",
            f"{gateway['url']}: " + ("answering" if health.ok else health.error),
            **_supervised(up, "gateway"),
        )
    )
    workers = read_statuses(layout)
    sup = _supervised(up, "worker")
    if not workers:
        rows.append(ProcessRow("worker", "down", "no worker status file", **sup))
    for w in workers:
        running = len(w.get("running") or w.get("jobs") or [])
        state = "ok" if w.get("alive") else "down"
        detail = f"{w.get('worker_id')}: {running} job(s) running" + (
            "" if w.get("alive") else " (status stale)"
        )
        rows.append(
            ProcessRow(
                "worker",
                state,
                detail,
                w.get("pid") or sup["pid"],
                sup["restarts"],
                sup["uptime_s"],
            )
        )
    bridge = read_status(layout)
    sup = _supervised(up, "bridge")
    if bridge is None:
        rows.append(ProcessRow("bridge", "down", "no bridge running (no status file)", **sup))
    else:
        state = "ok" if bridge.get("alive") else "down"
        remote = str(bridge.get("remote", ""))
        rows.append(
            ProcessRow(
                "bridge",
                state,
                f"remote: {remote}",
                bridge.get("pid"),
                sup["restarts"],
                sup["uptime_s"],
            )
        )
    for b in gateway["backends"]:
        state = "ok" if b.get("healthy") else "down"
        detail = f"{b.get('type', '')} {b.get('detail') or ''} breaker {b.get('breaker', '?')}"
        rows.append(ProcessRow(f"backend {b.get('name')}", state, detail.strip()))
    if not gateway["backends"] and health.ok:
        ready: HttpResult = gateway["ready"]
        for name, ok in ((ready.body or {}).get("backends") or {}).items():
            rows.append(ProcessRow(f"backend {name}", "ok" if ok else "down", "from /ready"))
    return rows


def overview(
    cfg: FieldboxConfig, layout: Layout, outbox: Outbox, queue: Queue, api: ProcessRow, token: str
) -> dict[str, Any]:
    """What the admin overview and `fieldbox status` show, from the same sources."""
    gateway = gateway_facts(cfg, layout, token)
    rows = processes(cfg, layout, api, gateway)
    bridge = read_status(layout) or {}
    litestream = bridge.get("litestream") if isinstance(bridge.get("litestream"), dict) else {}
    return {
        "rows": rows,
        "healthy": all(r.state == "ok" for r in rows),
        "machine": machine(layout),
        "backlog": outbox.backlog(),
        "jobs": queue.counts(),
        "draining": is_draining(layout),
        "litestream_max_lag_s": (litestream or {}).get("max_lag_s"),
        "data_dir": str(layout.root),
    }


def gateway_facts(cfg: FieldboxConfig, layout: Layout, token: str) -> dict[str, Any]:
    """The gateway's health, readiness and backends (aliases, slots) as it reports them."""
    url = gateway_url(cfg, read_up_status(layout))
    health = http_json(url + "/health")
    ready = http_json(url + "/ready") if health.ok else health
    backends = http_json(url + "/v1/backends", token=token) if health.ok else health
    body = backends.body if backends.ok and isinstance(backends.body, dict) else {}
    return {
        "url": url,
        "health": health,
        "ready": ready,
        "backends": body.get("backends") or [],
        "aliases": body.get("aliases") or {},
        "slots": body.get("slots") or {},
        "error": "" if backends.ok else backends.error,
    }


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            out[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def gpus() -> list[dict[str, Any]]:
    """Each GPU's name and memory, from `nvidia-smi` when it is installed; else none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.used,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=3,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            found.append(
                {
                    "name": parts[0],
                    "memory_used_bytes": int(parts[1]) * 2**20,
                    "memory_total_bytes": int(parts[2]) * 2**20,
                }
            )
    return found


def machine(layout: Layout) -> dict[str, Any]:
    """Load, cores, memory, data-disk space and GPUs (workers' reports when no nvidia-smi)."""
    mem = _meminfo()
    disk = shutil.disk_usage(layout.root)
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    found = gpus() or [w["gpu"] for w in read_statuses(layout) if isinstance(w.get("gpu"), dict)]
    return {
        "cpus": os.cpu_count() or 1,
        "load": load,
        "mem_total": mem.get("MemTotal"),
        "mem_available": mem.get("MemAvailable"),
        "disk_total": disk.total,
        "disk_free": disk.free,
        "gpus": found,
    }
