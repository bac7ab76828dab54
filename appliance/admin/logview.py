"""Recent structured log events for the admin page, filtered by level, process and text.

Two sources, chosen by what is there:
- under `fieldbox up`: the tail of `{data}/logs/up.log`, which `up` tees every child's JSON
  lines into (api, gateway, worker, bridge, and each process's restarts);
- otherwise (systemd units, where journald keeps the logs): the api's own recent events,
  kept in memory by `appliance.observe.RECENT`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.observe import RECENT
from appliance.supervisor import read_up_status
from store.paths import Layout

LEVELS = ("debug", "info", "warning", "error", "critical")
_TAIL_BYTES = 2 * 1024 * 1024
_SHOWN_KEYS = ("timestamp", "level", "process", "event", "request_id")


@dataclass(frozen=True)
class LogLine:
    """One event as the log table shows it."""

    timestamp: str
    level: str
    process: str
    event: str
    fields: str


def _tail(path: Path, limit: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    if size > _TAIL_BYTES:
        lines = lines[1:]  # the first is probably cut
    return lines[-limit:]


def _parse(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        # Not ours (a traceback line, a C library's message): keep it, as text.
        return {"event": line, "level": "info", "process": "?", "timestamp": ""}
    return event


def _line(event: dict[str, Any]) -> LogLine:
    rest = {k: v for k, v in event.items() if k not in _SHOWN_KEYS}
    fields = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in rest.items())
    return LogLine(
        timestamp=str(event.get("timestamp", ""))[:23].replace("T", " "),
        level=str(event.get("level", "info")).lower(),
        process=str(event.get("process", "?")),
        event=str(event.get("event", "")),
        fields=fields[:600],
    )


def source(layout: Layout) -> str:
    """Which source `recent` reads: "up" (every process) or "api" (this process only)."""
    if read_up_status(layout) is not None and layout.up_log.is_file():
        return "up"
    return "api"


def recent(
    layout: Layout,
    *,
    level: str = "",
    process: str = "",
    text: str = "",
    limit: int = 300,
) -> tuple[list[LogLine], list[str]]:
    """Newest-first events at `level` or above, of `process`, containing `text`; and the
    processes seen (for the filter's choices)."""
    if source(layout) == "up":
        events = [_parse(line) for line in _tail(layout.up_log, 20_000)]
    else:
        events = list(RECENT.events)
    floor = LEVELS.index(level) if level in LEVELS else 0
    seen = sorted({str(e.get("process", "?")) for e in events})
    out: list[LogLine] = []
    for event in reversed(events):
        line = _line(event)
        rank = LEVELS.index(line.level) if line.level in LEVELS else 1
        if rank < floor or (process and line.process != process):
            continue
        if text and text.lower() not in f"{line.event} {line.fields}".lower():
            continue
        out.append(line)
        if len(out) >= limit:
            break
    return out, seen
