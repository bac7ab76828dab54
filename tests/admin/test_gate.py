"""The admin gate in-process (Litestar's TestClient): LAN only, a real session, CSRF on POSTs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from appliance.admin.gate import client_allowed
from appliance.app import create_app
from appliance.config import AdminConfig, FieldboxConfig
from tests.conftest import make_config, make_token

Client = TestClient[Litestar]
_CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
PAGES = [
    "/admin",
    "/admin/models",
    "/admin/jobs",
    "/admin/sync",
    "/admin/assets",
    "/admin/access",
    "/admin/logs",
]


@pytest.fixture
def lan_cfg(tmp_path: Path) -> FieldboxConfig:
    """A config whose admin page answers the test client (which has no IP address)."""
    return make_config(tmp_path / "data", "[admin]\nallow_any_network = true\n")


@pytest.fixture
def anon(lan_cfg: FieldboxConfig) -> Iterator[Client]:
    """A browser with no session."""
    with TestClient(app=create_app(lan_cfg)) as c:
        yield c


def _csrf(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


def sign_in(c: Client, token: str) -> str:
    """Sign in through the form; return the session's CSRF token."""
    form = c.get("/admin/login")
    assert form.status_code == 200
    r = c.post(
        "/admin/login", data={"token": token, "_csrf": _csrf(form.text)}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    return _csrf(c.get("/admin").text)


def test_lan_only_by_default() -> None:
    """Loopback, private and link-local clients are let in; public and tailnet ones are not,
    unless configured."""
    cfg = AdminConfig()
    for ok in ("127.0.0.1", "::1", "192.168.1.20", "10.1.2.3", "172.16.0.9", "fe80::1"):
        assert client_allowed(ok, cfg), ok
    for bad in ("203.0.113.7", "8.8.8.8", "100.101.102.103", "2001:db8::1", "testclient", ""):
        assert not client_allowed(bad, cfg), bad
    assert client_allowed("203.0.113.7", AdminConfig(allow_networks=["203.0.113.0/24"]))
    assert client_allowed("8.8.8.8", AdminConfig(allow_any_network=True))


def test_a_client_outside_the_lan_is_refused(tmp_path: Path) -> None:
    """With the default config a non-IP (non-LAN) client gets 403 JSON, even on the sign-in page."""
    with TestClient(app=create_app(make_config(tmp_path / "data"))) as c:
        r = c.get("/admin/login")
        assert r.status_code == 403
        assert r.json()["error"] == "forbidden"


@pytest.mark.parametrize("path", PAGES)
def test_pages_without_a_session_redirect_to_sign_in(anon: Client, path: str) -> None:
    """Every page GET without a session is sent to the sign-in page, which says where to return."""
    r = anon.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/admin/login?next=")


def test_other_requests_without_a_session_get_401_json(anon: Client) -> None:
    """A form post, an event stream or a static file without a session: 401 JSON, no redirect."""
    for method, path in (
        ("POST", "/admin/sync/now"),
        ("GET", "/admin/jobs/x/events"),
        ("GET", "/admin/static/admin.js"),
        ("POST", "/admin/access/keys"),
    ):
        r = anon.request(method, path, follow_redirects=False)
        assert r.status_code == 401, (path, r.status_code)
        assert r.json()["status"] == 401


def test_a_forged_cookie_is_not_a_session(anon: Client) -> None:
    """A made-up session id gets the same as no cookie at all."""
    anon.cookies.set("fbx_admin", "A" * 43, path="/admin")
    assert anon.get("/admin", follow_redirects=False).status_code == 303
    assert anon.post("/admin/sync/now", data={"_csrf": "x"}).status_code == 401


def test_sign_in_sets_a_strict_httponly_cookie_and_rotates_it(
    anon: Client, lan_cfg: FieldboxConfig
) -> None:
    """The cookie is HttpOnly, SameSite=Strict, path /admin; signing in issues a new id."""
    form = anon.get("/admin/login")
    before = form.cookies["fbx_admin"]
    header = form.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header and "path=/admin" in header
    r = anon.post(
        "/admin/login",
        data={"token": make_token(lan_cfg, ("admin",)), "_csrf": _csrf(form.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    assert r.cookies["fbx_admin"] != before
    assert anon.get("/admin").status_code == 200


def test_sign_in_refuses_a_field_key_and_a_bad_token(anon: Client, lan_cfg: FieldboxConfig) -> None:
    """Only a live key with the admin scope signs in; the form says why not."""
    for token, why in (
        (make_token(lan_cfg, ("field",)), "lacks the admin scope"),
        ("fbx_nope_nope", "not valid"),
    ):
        form = anon.get("/admin/login")
        r = anon.post("/admin/login", data={"token": token, "_csrf": _csrf(form.text)})
        assert r.status_code == 401 and why in r.text
        assert anon.get("/admin", follow_redirects=False).status_code == 303


def test_posts_need_the_sessions_csrf_token(anon: Client, lan_cfg: FieldboxConfig) -> None:
    """Signed in, a POST without the token, or with another one, is refused with 403 and
    does nothing; with it, it works."""
    csrf = sign_in(anon, make_token(lan_cfg, ("admin",)))
    before = anon.get("/admin/access").text.count('data-key="')
    for data in ({"name": "x", "scopes": "field"}, {"name": "x", "scopes": "field", "_csrf": "no"}):
        r = anon.post("/admin/access/keys", data=data)
        assert r.status_code == 403 and "CSRF" in r.json()["message"]
    assert anon.get("/admin/access").text.count('data-key="') == before
    ok = anon.post("/admin/access/keys", data={"name": "tablet", "scopes": "field", "_csrf": csrf})
    assert ok.status_code == 200 and 'id="new-token"' in ok.text
    assert anon.get("/admin/access").text.count('data-key="') == before + 1


def test_the_login_form_needs_its_csrf_token(anon: Client, lan_cfg: FieldboxConfig) -> None:
    """Even a valid admin key cannot sign in through a post that lacks the form's token."""
    anon.get("/admin/login")
    r = anon.post("/admin/login", data={"token": make_token(lan_cfg, ("admin",))})
    assert r.status_code == 403
    assert anon.get("/admin", follow_redirects=False).status_code == 303


def test_revoking_the_key_ends_its_session(anon: Client, lan_cfg: FieldboxConfig) -> None:
    """A session lives no longer than its key: revoked elsewhere, the next request signs out."""
    from store import keys
    from store.paths import Layout

    token = make_token(lan_cfg, ("admin",))
    sign_in(anon, token)
    assert anon.get("/admin/logs").status_code == 200
    db = keys.open_keys(str(Layout(lan_cfg.data_dir).keys_db), lan_cfg.store)
    try:
        keys.revoke(db, token.split("_")[1])
    finally:
        db.close()
    assert anon.get("/admin/logs", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(anon: Client, lan_cfg: FieldboxConfig) -> None:
    """After sign-out the old cookie opens nothing, even if the browser kept it."""
    csrf = sign_in(anon, make_token(lan_cfg, ("admin",)))
    kept = anon.cookies["fbx_admin"]
    r = anon.post("/admin/logout", data={"_csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    anon.cookies.set("fbx_admin", kept, path="/admin")
    assert anon.get("/admin", follow_redirects=False).status_code == 303


def test_sign_in_never_redirects_off_the_admin_page(anon: Client, lan_cfg: FieldboxConfig) -> None:
    """`next` pointing at another site lands on /admin instead."""
    form = anon.get("/admin/login?next=//evil.example/")
    r = anon.post(
        "/admin/login",
        data={
            "token": make_token(lan_cfg, ("admin",)),
            "next": "//evil.example/",
            "_csrf": _csrf(form.text),
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/admin"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_when_signed_in(
    anon: Client, lan_cfg: FieldboxConfig, path: str
) -> None:
    """Each section answers 200 HTML with the nav and a sign-out button on an empty box."""
    sign_in(anon, make_token(lan_cfg, ("admin",)))
    r = anon.get(path)
    assert r.status_code == 200, r.text[:2000]
    assert "text/html" in r.headers["content-type"]
    assert 'id="sign-out"' in r.text


@pytest.mark.parametrize(
    ("target", "lands"),
    [
        ("/admin/jobs", "/admin/jobs"),
        ("/admin/jobs/job_0123abcd", "/admin/jobs/job_0123abcd"),
        ("/admin/assets?q=roof&location=site1", "/admin/assets?q=roof&location=site1"),
        ("//evil.example/", "/admin"),
        ("/\\evil.example/", "/admin"),
        ("https://evil.example/admin", "/admin"),
        ("javascript:alert(1)", "/admin"),
        ("/admin/assets/site1.0123/download?inline=true", "/admin"),
        ("/admin/assets/site1.0123/download", "/admin"),
        ("/admin/../v1/assets/x/content", "/admin"),
        ("/admin/%2e%2e/v1/assets", "/admin"),
        ("/admin.evil.example/", "/admin"),
        ("/admin/login", "/admin"),
        ("/admin/static/admin.js", "/admin"),
        ("/admin/jobs/x/events", "/admin"),
        ("/admin/jobs\r\nX-Injected: 1", "/admin"),
    ],
)
def test_next_goes_only_to_admin_pages(
    anon: Client, lan_cfg: FieldboxConfig, target: str, lands: str
) -> None:
    """After sign-in `next` is followed only to an admin page of this origin: never another
    site, a scheme, a path that leaves /admin, or user content (an uploaded file)."""
    form = anon.get("/admin/login", params={"next": target})
    assert f'name="next" value="{lands}"' in form.text.replace("&amp;", "&")
    r = anon.post(
        "/admin/login",
        data={"token": make_token(lan_cfg, ("admin",)), "next": target, "_csrf": _csrf(form.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == lands
