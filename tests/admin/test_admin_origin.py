"""The admin origin in the real browser (docs/security.md): what a field key uploads never
runs as the admin, however the admin opens it.

Shares `tests/admin/test_browser.py`'s populated `fieldbox up` fixture and Chromium
helpers (a box of its own: fixtures are module-scoped)."""

from __future__ import annotations

import base64
import sqlite3
from urllib.parse import quote

import httpx
import pytest

from appliance.gateway_calls import KEY_NAME
from tests.admin.box import CONFIG, Box
from tests.admin.chromium import submit, visit
from tests.admin.test_browser import box, browser
from tests.conftest import make_config, make_token
from tests.system.helpers import client

__all__ = ["box", "browser"]  # pytest fixtures, used by name

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

# What a field key could upload to take the admin page over: run as the signed-in admin, it
# creates an admin key (synchronous requests, so it is done before the page has loaded)
# and renames the page. Nothing of it may run.
_TAKEOVER = """
var x = new XMLHttpRequest();
x.open('GET', '/admin/access', false); x.send();
var csrf = /name="_csrf" value="([^"]+)"/.exec(x.responseText)[1];
var y = new XMLHttpRequest();
y.open('POST', '/admin/access/keys', false);
y.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded');
y.send('name=pwned&scopes=admin&_csrf=' + encodeURIComponent(csrf));
document.title = 'PWNED';
"""
HOSTILE = {
    "evil.html": ("text/html", f"<!doctype html><title>x</title><script>{_TAKEOVER}</script>"),
    "evil.svg": (
        "image/svg+xml",
        f'<svg xmlns="http://www.w3.org/2000/svg"><script><![CDATA[{_TAKEOVER}]]></script></svg>',
    ),
}


def _key_count(box: Box) -> int:
    """Keys an admin could have made: the api's own gateway key for `ask` (made when its
    indexer first embeds, at a moment of its choosing) is not one."""
    with sqlite3.connect(box.data_dir / "keys.db") as db:
        return int(
            db.execute("SELECT count(*) FROM keys WHERE name != ?", (KEY_NAME,)).fetchone()[0]
        )


def _field_upload(box: Box, token: str, name: str, mime: str, body: bytes) -> str:
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"location": "site1", "filename": name, "filetype": mime}.items()
    )
    with client(box.url, token) as c:
        r = c.post(
            "/v1/uploads",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(len(body)),
                "Upload-Metadata": meta,
            },
        )
        assert r.status_code == 201, r.text
        done = c.patch(
            r.headers["location"],
            content=body,
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert done.status_code == 204, done.text
        return str(done.headers["fieldbox-asset-id"])


def _not_taken_over(browser: WebDriver, box: Box, keys_before: int, how: str) -> None:
    assert _key_count(box) == keys_before, f"a key was created ({how})"
    title = browser.execute_script("return document.title")
    assert "PWNED" not in title, f"the uploaded script ran ({how})"


def test_uploaded_html_and_svg_run_no_script_as_the_admin(browser: WebDriver, box: Box) -> None:
    """As a field key, upload HTML and SVG whose script would create an admin key; as the
    admin open them from the assets page, at the inline URL, and through sign-in's `next`:
    no key is created and no script runs."""
    field = make_token(make_config(box.data_dir, CONFIG), ("field",))
    uploaded = {
        name: _field_upload(box, field, name, mime, body.encode())
        for name, (mime, body) in HOSTILE.items()
    }
    visit(browser, box, "/admin")  # a fresh browser: sign in as the admin first
    browser.find_element(By.ID, "token").send_keys(box.token)
    submit(browser, "#sign-in")
    assert browser.current_url == box.url + "/admin"
    keys_before = _key_count(box)
    for name, asset in uploaded.items():
        visit(browser, box, f"/admin/assets?q={name}")
        browser.find_element(By.CSS_SELECTOR, f"tr[data-asset='{asset}'] a").click()
        visit(browser, box, "/admin/assets")
        _not_taken_over(browser, box, keys_before, f"{name} clicked")
        inline = f"/admin/assets/{asset}/download?inline=true"
        browser.get(box.url + inline)
        _not_taken_over(browser, box, keys_before, f"{name} at {inline}")
        visit(browser, box, "/admin")
        submit(browser, "#sign-out")
        browser.get(f"{box.url}/admin/login?next={quote(inline)}")
        browser.find_element(By.ID, "token").send_keys(box.token)
        submit(browser, "#sign-in")
        _not_taken_over(browser, box, keys_before, f"{name} through sign-in's next")
        assert browser.current_url == box.url + "/admin"
    visit(browser, box, "/admin/assets")
    # The download itself still gives the bytes, as an attachment nothing can render.
    cookie = browser.get_cookie("fbx_admin")
    assert cookie is not None
    got = httpx.get(
        f"{box.url}/admin/assets/{uploaded['evil.html']}/download?inline=true",
        cookies={"fbx_admin": cookie["value"]},
    )
    assert got.content == HOSTILE["evil.html"][1].encode()
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment;")
