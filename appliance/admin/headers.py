"""The security headers of the api's responses: a strict CSP on every admin page.

The one inline element the admin pages carry is the splat viewer's import map (JSON that
tells the browser where `three` and `@sparkjsdev/spark` live; it cannot run): the CSP
allows exactly its text by hash, Spark's WebAssembly (`'wasm-unsafe-eval'`, which allows no
JavaScript eval) and its sort workers, which it starts from blob: URLs.

Given to `RequestObserver` as its header rule, so they are on every answer under `/admin`
(pages, static files, the gate's redirects and 401/403s, 404s), not only on templates.
A response that set its own policy keeps it: user content is served with `sandbox`.
"""

from __future__ import annotations

import base64
import hashlib
import json

from appliance.observe import NOSNIFF, Headers

IMPORT_MAP = json.dumps(
    {
        "imports": {
            "three": "/admin/static/three/build/three.module.js",
            "three/addons/": "/admin/static/three/examples/jsm/",
            "@sparkjsdev/spark": "/admin/static/@sparkjsdev/spark/dist/spark.module.min.js",
        }
    },
    separators=(",", ":"),
)
"""The bare module names of the vendored npm packages, as paths under /admin/static."""

_IMPORT_MAP_HASH = base64.b64encode(hashlib.sha256(IMPORT_MAP.encode()).digest()).decode()

ADMIN_CSP = "; ".join(
    (
        "default-src 'self'",
        f"script-src 'self' 'wasm-unsafe-eval' 'sha256-{_IMPORT_MAP_HASH}'",
        "worker-src 'self' blob:",
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
"""Our own files only: no inline script (bar the hashed import map), style attribute,
plugin, framing or foreign form."""

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
