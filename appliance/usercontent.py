"""How bytes a client uploaded are served on the box's origin (docs/security.md).

The admin page shares its origin with every asset download, so an uploaded HTML or SVG
file opened inline there would run with the admin's session. Only types that cannot run
script are ever inline; everything else is an `application/octet-stream` attachment, and
every answer carries `nosniff` and `Content-Security-Policy: sandbox` (no script, no
same-origin access, even if a browser rendered it anyway).
"""

from __future__ import annotations

from urllib.parse import quote

from store.mediatype import essence_of

INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "application/pdf",
        "text/plain",
    }
)
"""Exact types that may be shown inline; `video/*` and `audio/*` may too. Never SVG."""

USER_CONTENT_CSP = "sandbox"
DOWNLOAD_TYPE = "application/octet-stream"


def can_inline(mime_type: str) -> bool:
    """True when a browser can show `mime_type` without running anything in it."""
    essence = essence_of(mime_type)
    return essence in INLINE_TYPES or essence.startswith(("video/", "audio/"))


def served_type(mime_type: str) -> str:
    """The Content-Type to send for a stored type: safe types as themselves, else a download."""
    essence = essence_of(mime_type)
    if essence == "text/plain":
        # A charset of our choosing: a client-given one (UTF-7 and friends) is not kept.
        return "text/plain; charset=utf-8"
    return essence if can_inline(essence) else DOWNLOAD_TYPE


def content_headers(filename: str, mime_type: str, *, inline: bool) -> dict[str, str]:
    """Content-Type, Content-Disposition and the sandboxing headers of one asset download.

    Keys are lowercase so that Litestar's `File` keeps our Content-Disposition (it only
    sets its own when none is there) rather than quoting the name its own way.
    """
    disposition = "inline" if inline and can_inline(mime_type) else "attachment"
    return {
        "content-type": served_type(mime_type),
        # Always the RFC 8187 form: every byte outside the unreserved set is %-encoded, so
        # no stored name can break the header (older rows were not checked at upload).
        "content-disposition": f"{disposition}; filename*=UTF-8''{quote(filename, safe='')}",
        "x-content-type-options": "nosniff",
        "content-security-policy": USER_CONTENT_CSP,
    }
