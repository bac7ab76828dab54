"""A project rendered as one markdown file with YAML front matter (the "data pile" format)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec

from store.assets import Asset
from store.documents import Document
from store.locations import Location


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _yaml_str(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar, escapes included.
    return json.dumps(value, ensure_ascii=False)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def render(
    loc: Location, project: str, docs: list[Document], files: list[Asset], now: float
) -> str:
    """The markdown of one project: front matter, then documents by collection, then assets."""
    lines = [
        "---",
        f"location: {_yaml_str(loc.id)}",
        f"location_name: {_yaml_str(loc.name)}",
        f"account: {_yaml_str(loc.account)}",
        f"geo_prefix: {_yaml_str(loc.geo_prefix)}",
        f"project: {_yaml_str(project)}",
        f"generated_at: {_yaml_str(_when(now))}",
        f"documents: {len(docs)}",
        f"assets: {len(files)}",
        "---",
        "",
        f"# {project} — {loc.name}",
        "",
        "## Documents",
        "",
    ]
    if not docs:
        lines += ["_No documents._", ""]
    collection = None
    for doc in docs:
        if doc.collection != collection:
            collection = doc.collection
            lines += [f"### {collection}", ""]
        pretty = json.dumps(msgspec.json.decode(doc.body), indent=2, ensure_ascii=False)
        lines += [
            f"#### {doc.key}",
            "",
            f"_updated {_when(doc.updated_at)} · ETag `{doc.etag}`_",
            "",
            "```json",
            pretty,
            "```",
            "",
        ]
    lines += ["## Assets", ""]
    if not files:
        lines += ["_No assets._", ""]
    else:
        lines += ["| file | kind | size | uploaded | sha256 |", "|---|---|---|---|---|"]
        for a in files:
            name = a.filename.replace("|", "\\|").replace("]", "\\]")
            lines.append(
                f"| [{name}](/v1/assets/{a.id}/content) | {a.kind} | {_size(a.size)} "
                f"| {_when(a.created_at)} | `{a.sha256[:12]}` |"
            )
        lines.append("")
    return "\n".join(lines)
