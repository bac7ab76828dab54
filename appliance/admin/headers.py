"""The security headers of the api's responses: a strict CSP on every admin page.

Given to `RequestObserver` as its header rule, so they are on every answer under `/admin`
(pages, static files, the gate's redirects and 401/403s, 404s), not only on templates.
A response that set its own policy keeps it: user content is served with `sandbox`.
"""

from __future__ import annotations

from appliance.observe import NOSNIFF, Headers

ADMIN_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # data: only for the page's empty favicon; an image cannot run script.
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""Our own files only: no inline script, style attribute, plugin, framing or foreign form."""

ADMIN_HEADERS: Headers = (
    *NOSNIFF,
    (b"content-security-policy", ADMIN_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)


def api_headers(path: str) -> Headers:
    """The headers every api response carries: the admin set under `/admin`, else nosniff."""
    if path == "/admin" or path.startswith("/admin/"):
        return ADMIN_HEADERS
    return NOSNIFF
