"""What `fieldbox up` writes to its stdout: its children's log events, and the banner.

The children always log JSON to `up` (it tees them into `up.log` for the admin page). On a
terminal `up` renders each event as one readable line: the time, a short coloured process
prefix, then structlog's console rendering (level and message first, key=value after).
Anywhere else (a pipe, a file, journald) it passes the JSON on as it came, and the banner
is one JSON event too, so a script reading `up` sees nothing but JSON lines. Every line is
one write under one lock: lines of two children never mix.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Literal

import structlog

LogFormat = Literal["auto", "console", "json"]

_PREFIX_COLOURS = {"api": "36", "gateway": "35", "worker": "33", "bridge": "34", "up": "32"}
_PREFIX_WIDTH = 7


def human_output(fmt: LogFormat, stream: IO[Any], env: Mapping[str, str]) -> bool:
    """Whether `up` renders for a person: `console`, or `auto` on a terminal outside journald."""
    if fmt != "auto":
        return fmt == "console"
    # systemd sets JOURNAL_STREAM when stdout is the journal: it wants one event a line.
    return stream.isatty() and not env.get("JOURNAL_STREAM")


class Console:
    """`up`'s stdout: child lines, its own notes and the banner, each written whole."""

    def __init__(self, out: IO[bytes], human: bool, colour: bool) -> None:
        self.out = out
        self.human = human
        self.colour = colour
        self._lock = threading.Lock()
        self._renderer = structlog.dev.ConsoleRenderer(colors=colour, pad_event_to=24)
        self.last_line_at = 0.0

    def child_line(self, name: str, raw: bytes, at: float) -> None:
        """One line a child printed: rendered on a terminal, passed on as it is elsewhere."""
        if not raw.endswith(b"\n"):
            raw += b"\n"
        text = self._render(name, raw) if self.human else raw
        self._write(text)
        self.last_line_at = at

    def note(self, event: str, level: str = "info", **fields: Any) -> None:
        """An event of `up` itself (a child restarting, a child not ready)."""
        record = {"event": event, "level": level, **fields, "timestamp": _now_iso()}
        if self.human:
            self._write(self._render("up", json.dumps(record).encode()))
        else:
            record["process"] = "up"
            self._write(json.dumps(record).encode() + b"\n")

    def banner(self, rows: list[tuple[str, str, str]], token: str | None) -> None:
        """The box's addresses as (label, key, value), and the first admin token: one block
        on a terminal, one event elsewhere."""
        if not self.human:
            record: dict[str, Any] = {"event": "fieldbox_up", "level": "info", "process": "up"}
            record.update({key: value for _, key, value in rows})
            if token:
                record["admin_token"] = token
            record["timestamp"] = _now_iso()
            self._write(json.dumps(record).encode() + b"\n")
            return
        width = max(len(label) for label, _, _ in [*rows, ("admin token", "", "")])
        bold = "\x1b[1m" if self.colour else ""
        reset = "\x1b[0m" if self.colour else ""
        lines = ["", f"  {bold}fieldbox is up{reset}"]
        lines += [f"    {label:<{width}}  {value}" for label, _, value in rows]
        if token:
            lines.append(f"    {'admin token':<{width}}  {bold}{token}{reset}")
            lines.append(f"    {'':<{width}}  (shown once, on this first start: keep it)")
        lines += ["  Ctrl-C stops every process.", ""]
        self._write(("\n".join(lines) + "\n").encode())

    def _write(self, data: bytes) -> None:
        with self._lock:
            try:
                self.out.write(data)
                self.out.flush()
            except (OSError, ValueError):
                pass  # a closed terminal must not stop the box

    def _render(self, name: str, raw: bytes) -> bytes:
        prefix = self._prefix(name)
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            # Not one of our events (a traceback line, a print): shown as it came.
            return f"{_clock(None)} {prefix} {raw.decode(errors='replace').rstrip()}\n".encode()
        stamp = _clock(event.pop("timestamp", None))
        event.pop("process", None)
        event.setdefault("level", "info")
        rendered = str(self._renderer(None, str(event["level"]), event))
        return f"{stamp} {prefix} {rendered}\n".encode()

    def _prefix(self, name: str) -> str:
        text = f"{name:<{_PREFIX_WIDTH}}"
        code = _PREFIX_COLOURS.get(name)
        if not self.colour or code is None:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _clock(stamp: Any) -> str:
    """HH:MM:SS in local time, from an ISO timestamp (now when there is none)."""
    when = datetime.now().astimezone()
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone()
    return when.strftime("%H:%M:%S")


def colour_wanted(human: bool, stream: IO[Any], env: Mapping[str, str]) -> bool:
    """Colour on a terminal unless NO_COLOR is set (https://no-color.org)."""
    return human and stream.isatty() and "NO_COLOR" not in env and env.get("TERM") != "dumb"
