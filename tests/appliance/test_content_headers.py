"""The admin origin's headers (docs/security.md): what a client may name at upload, how its
bytes are served back, and the headers every answer of both apps carries."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.admin.headers import ADMIN_CSP
from appliance.app import create_app
from appliance.config import FieldboxConfig
from appliance.services import Services
from bridge.dropfolder import FAILED, DropFolder
from inference.app import create_gateway_app
from store import ingest
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from tests.appliance.test_api_uploads import TUS, make_location, metadata, tus_create, upload
from tests.conftest import make_config, make_token

Client = TestClient[Litestar]
_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Client, Client, FieldboxConfig]]:
    """(a field client, a signed-in admin browser, the config) on one app with `loc1`."""
    cfg = make_config(tmp_path / "data", "[admin]\nallow_any_network = true\n")
    field, admin = make_token(cfg, ("field",)), make_token(cfg, ("admin",))
    app = create_app(cfg)
    with TestClient(app=app) as c:
        # One lifespan (the first client's); the admin's browser shares its app state.
        browser = TestClient(app=app)
        c.headers["Authorization"] = f"Bearer {field}"
        make_location(c)
        form = browser.get("/admin/login")
        csrf = _CSRF.search(form.text)
        assert csrf is not None
        r = browser.post("/admin/login", data={"token": admin, "_csrf": csrf.group(1)})
        assert r.status_code == 200 and r.url.path == "/admin", r.text[:300]
        yield c, browser, cfg


@contextlib.contextmanager
def _anonymous(app: Litestar) -> Iterator[Client]:
    """A browser with no session on the running app (not entered: no second lifespan)."""
    yield TestClient(app=app)


def _stored(cfg: FieldboxConfig) -> tuple[int, int]:
    """(upload rows, asset rows of loc1) on disk: what a refused upload must not leave."""
    layout = Layout(cfg.data_dir)
    with sqlite3.connect(layout.uploads_db) as db:
        ups = db.execute("SELECT count(*) FROM uploads").fetchone()[0]
    loc_db = next(layout.root.glob("locations/*/*/loc1/location.db"))
    with sqlite3.connect(loc_db) as db:
        assets = db.execute("SELECT count(*) FROM assets").fetchone()[0]
    return int(ups), int(assets)


def _refused(r: httpx.Response, needle: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == 400 and body["error"] == "invalid_name", body
    assert needle in body["message"], body
    assert r.headers["tus-resumable"] == "1.0.0"


@pytest.mark.parametrize(
    "mime",
    [
        "text/html\r\nSet-Cookie: a=b",
        "text/html\n",
        "image/svg+xml\x00",
        "text/plain; charset=\x01utf-8",
        'text/plain; charset="a\x7fb"',
        "text",
        "text/",
        "/html",
        "text/html/x",
        "text /html",
        "téxt/plain",
        "text/plain; charset",
        "text/plain;;",
        "-x/y",
        "a/" + "b" * 128,
    ],
)
def test_bad_media_types_are_refused_at_creation(
    box: tuple[Client, Client, FieldboxConfig], mime: str
) -> None:
    """A type outside RFC 6838's grammar (or with a control character) is a 400 when the
    upload is created, and nothing is stored."""
    c, _, cfg = box
    _refused(tus_create(c, 4, filename="a.txt", filetype=mime), "media type")
    _refused(tus_create(c, 4, filename="a.txt", content_type=mime), "media type")
    assert _stored(cfg) == (0, 0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("filename", "report\r\n.pdf"),
        ("filename", "report\x00.pdf"),
        ("filename", "tab\there.txt"),
        ("filename", "del\x7f.txt"),
        ("filename", "c1\x85.txt"),
        ("filename", "csi\x9b.txt"),
        ("project", "p1\x85"),
        ("note", "any other value\nX-Injected: 1"),
    ],
)
def test_control_characters_in_metadata_are_refused(
    box: tuple[Client, Client, FieldboxConfig], field: str, value: str
) -> None:
    """A control character (C0, DEL, C1) in the file name or any metadata value is a 400
    at creation: no asset exists whose downloads would carry it into a header."""
    c, _, cfg = box
    meta = {"filename": "ok.txt", field: value}
    r = c.post(
        "/v1/uploads",
        headers={**TUS, "Upload-Length": "4", "Upload-Metadata": metadata(location="loc1", **meta)},
    )
    _refused(r, "control characters")
    assert _stored(cfg) == (0, 0)


def test_valid_media_types_are_kept(box: tuple[Client, Client, FieldboxConfig]) -> None:
    """Real types pass, lowercased, parameters kept; a missing type is guessed from the name."""
    c, _, _ = box
    cases = {
        "Video/MP4": "video/mp4",
        "application/vnd.api+json": "application/vnd.api+json",
        'text/plain; charset="utf-8"': 'text/plain; charset="utf-8"',
        "image/x-icon": "image/x-icon",
    }
    for given, kept in cases.items():
        asset = upload(c, b"data", filename="f.bin", filetype=given)
        assert c.get(f"/v1/assets/{asset}").json()["mime_type"] == kept
    guessed = upload(c, b"data", filename="photo.jpg")
    assert c.get(f"/v1/assets/{guessed}").json()["mime_type"] == "image/jpeg"


# (stored type, Content-Type served, may be inline)
SERVED = [
    ("text/html", "application/octet-stream", False),
    ("image/svg+xml", "application/octet-stream", False),
    ("application/xhtml+xml", "application/octet-stream", False),
    ("text/xml", "application/octet-stream", False),
    ("application/javascript", "application/octet-stream", False),
    ("application/octet-stream", "application/octet-stream", False),
    ("image/png", "image/png", True),
    ("image/jpeg", "image/jpeg", True),
    ("image/gif", "image/gif", True),
    ("image/webp", "image/webp", True),
    ("image/avif", "image/avif", True),
    ("image/bmp", "image/bmp", True),
    ("video/mp4; codecs=avc1", "video/mp4", True),
    ("audio/ogg", "audio/ogg", True),
    ("application/pdf", "application/pdf", True),
    ("text/plain; charset=utf-7", "text/plain; charset=utf-8", True),
]


def test_download_headers_follow_the_allowlist(
    box: tuple[Client, Client, FieldboxConfig],
) -> None:
    """Only types that cannot run script are inline; the rest are octet-stream attachments;
    every download is sandboxed and nosniff, on both routes."""
    c, browser, _ = box
    for stored, served, inline in SERVED:
        asset = upload(c, b"<script>1</script>", filename="x y.html", filetype=stored)
        name = "filename*=UTF-8''x%20y.html"
        answers = {
            "admin inline": browser.get(f"/admin/assets/{asset}/download?inline=true"),
            "admin": browser.get(f"/admin/assets/{asset}/download"),
            "v1": c.get(f"/v1/assets/{asset}/content"),
            "v1 head": c.head(f"/v1/assets/{asset}/content"),
        }
        for route, r in answers.items():
            assert r.status_code == 200, (stored, route, r.text)
            h = r.headers
            assert h["content-type"] == served, (stored, route)
            disposition = "inline" if inline and route == "admin inline" else "attachment"
            assert h["content-disposition"] == f"{disposition}; {name}", (stored, route)
            assert h["content-security-policy"] == "sandbox", (stored, route)
            assert h["x-content-type-options"] == "nosniff", (stored, route)


def test_an_old_row_with_a_bad_name_and_type_downloads_safely(
    box: tuple[Client, Client, FieldboxConfig], tmp_path: Path
) -> None:
    """A row stored before the checks (a CR/LF in its name and type) still downloads: 200,
    the name %-encoded, the type a download, no injected header."""
    c, browser, _ = box
    svc: Services = c.app.state.svc
    src = tmp_path / "old.bin"
    src.write_bytes(b"<html><script>alert(1)</script>")
    old = ingest.add_file(
        svc.layout,
        svc.locations,
        svc.outbox,
        "loc1",
        src,
        kind="document",
        filename="a\r\nX-Injected: 1\r\n.html",
        mime_type="text/html\r\nX-Injected: 2",
    )
    for r in (
        browser.get(f"/admin/assets/{old.id}/download?inline=true"),
        c.get(f"/v1/assets/{old.id}/content"),
    ):
        assert r.status_code == 200, r.text
        assert r.content == src.read_bytes()
        assert "x-injected" not in r.headers
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"] == (
            "attachment; filename*=UTF-8''a%0D%0AX-Injected%3A%201%0D%0A.html"
        )


def test_drop_folder_refuses_a_name_with_a_control_character(tmp_path: Path) -> None:
    """A file on disk whose name holds a newline goes to `failed/` with its reason; a
    good file beside it becomes an asset."""
    drop = tmp_path / "drop"
    drop.mkdir()
    toml = f'[bridge.drop_folder]\npath = "{drop}"\nlocation = "site1"\nstable_s = 0.01\n'
    cfg = make_config(tmp_path / "data", toml)
    layout = Layout(cfg.data_dir)
    layout.ensure()
    locs = Locations(layout, cfg.store)
    outbox = Outbox(str(layout.outbox_db), cfg.store)
    try:
        locs.create(Location(id="site1", account="acme", geo_prefix="eu", name="Site 1"))
        (drop / "evil\nname.html").write_bytes(b"<script>1</script>")
        (drop / "good.txt").write_bytes(b"fine")
        folder = DropFolder(cfg.bridge, layout, locs, outbox, rescan_s=0.1)
        deadline = time.monotonic() + 20
        while folder.failed + folder.ingested < 2 and time.monotonic() < deadline:
            asyncio.run(folder.scan_once())
        assert (folder.failed, folder.ingested) == (1, 1)
        names = [r[0] for r in locs.db("site1").read().execute("SELECT filename FROM assets")]
        assert names == ["good.txt"]
        note = (drop / FAILED / "evil\nname.html.error.txt").read_text()
        assert "control characters" in note
    finally:
        outbox.close()
        locs.close()


def test_nosniff_on_every_api_answer(box: tuple[Client, Client, FieldboxConfig]) -> None:
    """200, 201, 400, 401, 404, 405 and the gate's 303 and 401: all carry nosniff."""
    c, _, _ = box
    with _anonymous(c.app) as anon:
        answers = [
            (c.get("/health"), 200),
            (c.get("/v1/locations"), 200),
            (c.get("/v1/locations/no-such"), 404),
            (c.get("/no/such/route"), 404),
            (c.delete("/health"), 405),
            (c.post("/v1/locations", json={"id": "../x"}), 400),
            (anon.get("/v1/locations"), 401),
            (anon.get("/admin/jobs", follow_redirects=False), 303),
            (anon.get("/admin/static/admin.js"), 401),
        ]
    for r, status in answers:
        assert r.status_code == status, (r.request.method, r.request.url, r.text)
        assert r.headers["x-content-type-options"] == "nosniff", r.request.url


def test_nosniff_on_every_gateway_answer(tmp_path: Path) -> None:
    """The gateway's 200, 401, 404, 405 and 400 answers carry nosniff too."""
    toml = (
        '[[inference.backends]]\nname = "remote"\ntype = "openai"\n'
        'url = "http://127.0.0.1:1/v1"\nmodels = ["far-model"]\n'
    )
    cfg = make_config(tmp_path / "data", toml)
    token = make_token(cfg, ("gateway",))
    auth = {"Authorization": f"Bearer {token}"}
    app = create_gateway_app(cfg.gateway, cfg.inference, cfg.store)
    with TestClient(app=app) as c:
        answers = [
            (c.get("/health"), 200),
            (c.post("/v1/chat/completions", json={}), 401),
            (c.get("/no/such/route"), 404),
            (c.delete("/v1/chat/completions"), 405),
            (c.post("/v1/chat/completions", content=b"{not json", headers=auth), 400),
        ]
    for r, status in answers:
        assert r.status_code == status, (r.request.method, r.request.url, r.text)
        assert r.headers["x-content-type-options"] == "nosniff", r.request.url


def test_admin_csp_on_every_admin_answer(box: tuple[Client, Client, FieldboxConfig]) -> None:
    """Every page, the sign-in form, static files, the gate's refusals and a 404 under
    /admin carry the strict policy; user content keeps its own `sandbox`."""
    c, browser, _ = box
    asset = upload(c, b"x", filename="a.png")
    with _anonymous(c.app) as anon:
        answers = [
            *(
                (browser.get(p), 200)
                for p in ("/admin", "/admin/models", "/admin/jobs", "/admin/sync")
            ),
            *((browser.get(p), 200) for p in ("/admin/assets", "/admin/access", "/admin/logs")),
            (browser.get("/admin/static/admin.js"), 200),
            (browser.get("/admin/jobs/no-such-job"), 404),
            (anon.get("/admin/login"), 200),
            (anon.get("/admin/jobs", follow_redirects=False), 303),
            (anon.post("/admin/logout"), 401),
        ]
    for r, status in answers:
        assert r.status_code == status, (r.request.url, r.text[:200])
        assert r.headers["content-security-policy"] == ADMIN_CSP, r.request.url
        assert r.headers["x-frame-options"] == "DENY"
    # Script: our own files, WebAssembly (no JS eval) and the one import map by its hash.
    script = next(p for p in ADMIN_CSP.split("; ") if p.startswith("script-src "))
    assert script.split()[1:3] == ["'self'", "'wasm-unsafe-eval'"], script
    assert len(script.split()) == 4 and script.split()[3].startswith("'sha256-"), script
    assert "worker-src 'self' blob:" in ADMIN_CSP.split("; ")
    for part in (
        "default-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ):
        assert part in ADMIN_CSP.split("; ")
    own = browser.get(f"/admin/assets/{asset}/download?inline=true")
    assert own.headers.get_list("content-security-policy") == ["sandbox"]
