"""The admin templates' Jinja2 environment and the filters they use to show numbers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from appliance.admin.headers import IMPORT_MAP


def size(n: Any) -> str:
    """Bytes as B, KiB, MiB, GiB or TiB."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def span(seconds: Any) -> str:
    """A duration as `3d 4h`, `2h 5m`, `4m 10s` or `12s`."""
    if seconds is None:
        return "-"
    s = max(0, int(float(seconds)))
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m {s % 60}s"
    return f"{s}s"


def when(at: Any) -> str:
    """An epoch time as local `YYYY-MM-DD HH:MM:SS`, or `never`."""
    if not at:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(at)))


def ago(at: Any) -> str:
    """An epoch time as `5m 3s ago`, or `never`."""
    if not at:
        return "never"
    return f"{span(time.time() - float(at))} ago"


def as_json(value: Any) -> Markup:
    """A value as JSON safe to put inside a `<script type="application/json">` block."""
    text = json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text.replace("&", "\\u0026"))


def environment(directory: Path) -> Environment:
    """The admin templates' environment: autoescaping, strict undefined, the filters."""
    env = Environment(
        loader=FileSystemLoader(directory),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(size=size, span=span, when=when, ago=ago, as_json=as_json)
    # Rendered verbatim: the CSP allows the import map by the hash of exactly this text.
    env.globals["import_map"] = Markup(IMPORT_MAP)
    return env
