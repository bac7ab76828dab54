"""The location view's ask box in headless Chromium against a real `fieldbox up` (its own
gateway: the embedded llama.cpp SmolLM2 and the E5 embedder), on the eval fixture's location
(tests/eval/ask_fixture.json, loaded into the data dir before the box starts): an answer with
citations, a doc citation that opens the document's JSON, an unanswerable question, the
document view's escaping under the CSP, and a track citation's frame on the job page."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.admin.box import Box, start_box
from tests.admin.chromium import SHOTS, chromium, js_errors, sign_in, text, visit
from tests.eval import ask_load
from tests.system.helpers import client, create_location, tus_create, tus_finish, wait_job
from tests.videos import moving_square_video

LOCATION = ask_load.fixture()["location"]["id"]
ANSWERABLE = ["q01", "q05", "q09", "q10"]
"""Questions a document answers, tried in turn until the small model cites one (the page,
not the model's judgement, is under test)."""
UNANSWERABLE = "q51"
ASK_WAIT_S = 240  # the first ask embeds the whole location on the CPU


def _question(qid: str) -> dict[str, Any]:
    return next(q for q in ask_load.fixture()["questions"] if q["id"] == qid)


def _document(collection: str, key: str) -> Any:
    docs = ask_load.fixture()["documents"]
    return next(d["body"] for d in docs if d["collection"] == collection and d["key"] == key)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One `fieldbox up` for the module, its data dir holding the fixture location; the
    location's passages embedded (one ask through the field API) before any test."""
    tmp = tmp_path_factory.mktemp("askbox")
    ask_load.load(tmp / "data")
    running = start_box(tmp)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if httpx.get(running.gateway_url + "/ready", timeout=2).status_code == 200:
                break
            time.sleep(0.5)
        with client(running.url, running.token, timeout=ASK_WAIT_S) as c:
            r = c.post(f"/v1/locations/{LOCATION}/ask", json={"question": "roof"})
            assert r.status_code == 200, r.text
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(box: Box, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium, signed in with the box's admin key; page loads may take an ask."""
    driver = chromium(tmp_path_factory.mktemp("chromium"), tmp_path_factory.mktemp("downloads"))
    driver.set_page_load_timeout(ASK_WAIT_S)
    try:
        sign_in(driver, box)
        yield driver
    finally:
        driver.quit()


def _ask(driver: WebDriver, box: Box, question: str) -> None:
    """Open the location view, type the question, send it, wait for the answer page."""
    visit(driver, box, f"/admin/assets?location={LOCATION}")
    field = driver.find_element(By.ID, "ask-question")
    field.clear()
    field.send_keys(question)
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, "ask-send").click()
    WebDriverWait(driver, ASK_WAIT_S).until(
        lambda d: (
            old.id != d.find_element(By.TAG_NAME, "html").id
            and d.execute_script("return document.readyState") == "complete"
        )
    )
    assert js_errors(driver) == []


def _fragment(driver: WebDriver, name: str) -> str:
    """The answer block's HTML, kept under artifacts/admin/ for the record."""
    html = str(driver.find_element(By.ID, "ask-answer").get_attribute("outerHTML"))
    (SHOTS / f"{name}.html").write_text(html)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    return html


def _cookies(driver: WebDriver) -> dict[str, str]:
    cookie = driver.get_cookie("fbx_admin")
    assert cookie is not None
    return {"fbx_admin": str(cookie["value"])}


def test_the_ask_box_is_on_a_location_only(browser: WebDriver, box: Box) -> None:
    """No ask box on the every-location list; on the location view, one with the limit."""
    visit(browser, box, "/admin/assets")
    assert not browser.find_elements(By.ID, "ask-form")
    visit(browser, box, f"/admin/assets?location={LOCATION}", "ask-empty")
    field = browser.find_element(By.ID, "ask-question")
    assert field.get_attribute("maxlength") == "1000"
    assert not browser.find_elements(By.ID, "ask-answer")


def test_an_answer_with_citations_and_a_document_behind_one(browser: WebDriver, box: Box) -> None:
    """A question a document answers gets an answer and citation links; a doc citation
    opens that document's JSON, pretty-printed, as text."""
    cited = None
    for qid in ANSWERABLE:
        _ask(browser, box, _question(qid)["question"])
        assert not browser.find_elements(By.ID, "ask-error"), text(browser, "#ask-error")
        assert text(browser, "#ask-text").strip()
        docs = browser.find_elements(By.CSS_SELECTOR, "#ask-citations a[data-cite=doc]")
        if docs:
            cited = qid
            break
    assert cited is not None, f"no doc was cited for any of {ANSWERABLE}"
    html = _fragment(browser, "ask-answer")
    assert 'data-found="true"' in html
    assert browser.find_elements(By.CSS_SELECTOR, "#ask-citations li q")
    assert (
        browser.find_element(By.ID, "ask-question").get_attribute("value")
        == (_question(cited)["question"])
    )
    link = browser.find_element(By.CSS_SELECTOR, "#ask-citations a[data-cite=doc]")
    href = str(link.get_attribute("href"))
    collection, key = link.find_element(By.TAG_NAME, "code").text.split("/", 1)
    link.click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "document-json"))
    assert js_errors(browser) == []
    browser.save_screenshot(str(SHOTS / "ask-document.png"))
    shown = json.loads(text(browser, "#document-json"))
    assert shown == _document(collection, key)
    got = httpx.get(href, cookies=_cookies(browser))
    assert got.status_code == 200
    assert "'unsafe-inline'" not in got.headers["content-security-policy"]


def test_a_question_the_records_do_not_answer(browser: WebDriver, box: Box) -> None:
    """Not in records or an answer (the model's call): either way the answer block, no error."""
    _ask(browser, box, _question(UNANSWERABLE)["question"])
    assert not browser.find_elements(By.ID, "ask-error"), text(browser, "#ask-error")
    html = _fragment(browser, "ask-unanswerable")
    found = browser.find_element(By.ID, "ask-answer").get_attribute("data-found")
    assert found in ("true", "false")
    if found == "false":
        assert "not-found" in html and "Not in this location" in text(browser, "#ask-text")
    assert "Internal Server Error" not in browser.page_source


def test_an_empty_question_is_an_error_on_the_page(browser: WebDriver, box: Box) -> None:
    """Whitespace only: the location view again, saying so (no model call, no 4xx/5xx)."""
    visit(browser, box, f"/admin/assets?location={LOCATION}")
    got = httpx.post(
        box.url + "/admin/assets/ask",
        data={"location": LOCATION, "question": "   ", "_csrf": _csrf(browser)},
        cookies=_cookies(browser),
        headers={"Origin": box.url},
    )
    assert got.status_code == 200, got.text[:500]
    assert 'id="ask-error"' in got.text and "empty" in got.text


def _csrf(driver: WebDriver) -> str:
    field = driver.find_element(By.CSS_SELECTOR, "#ask-form input[name=_csrf]")
    return str(field.get_attribute("value"))


def test_the_document_view_escapes_and_404s(browser: WebDriver, box: Box) -> None:
    """A document that holds markup is shown as text under the CSP; a missing one is a 404."""
    probe = {"text": "</pre><script>document.title='owned'</script><img src=x onerror=alert(1)>"}
    with client(box.url, box.token) as c:
        r = c.put(
            f"/v1/locations/{LOCATION}/docs/notes/markup-probe",
            content=json.dumps(probe).encode(),
            headers={"If-None-Match": "*", "Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
    visit(
        browser,
        box,
        f"/admin/assets/document?location={LOCATION}&collection=notes&key=markup-probe",
    )
    assert json.loads(text(browser, "#document-json")) == probe
    assert browser.title != "owned"
    assert not browser.find_elements(By.CSS_SELECTOR, "#main script, #main img")
    path = f"/admin/assets/document?location={LOCATION}&collection=notes&key=no-such-doc"
    browser.get(box.url + path)  # not `visit`: Chromium logs the 404 itself as an error
    assert "not found" in text(browser, "#document-missing")
    assert all("404" in e for e in js_errors(browser))
    assert httpx.get(box.url + path, cookies=_cookies(browser)).status_code == 404


def test_a_track_citation_opens_its_frame_on_the_job_page(
    browser: WebDriver, box: Box, tmp_path: Path
) -> None:
    """A perception job's track, cited: the link goes to its job page with the track and
    frame; that frame is outlined, in view, and drawn with the track's box highlighted."""
    from appliance.admin.controllers import assets as view
    from appliance.ask import Answer, Citation
    from store import assets as store_assets
    from store.assets import Asset

    with client(box.url, box.token) as c:
        create_location(c, "site1")
        video = moving_square_video(tmp_path / "walk.mp4", frames=20)
        data = video.read_bytes()
        asset = tus_finish(c, tus_create(c, "site1", len(data), video.name), data)
        r = c.post(
            "/v1/jobs", json={"kind": "perception", "asset_id": asset, "params": {"fps": 5.0}}
        )
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"], {"succeeded", "failed", "dead"}, timeout=180)
        assert job["status"] == "succeeded", job
    facts_id = job["result"]["scene_facts_asset_id"]
    with client(box.url, box.token) as c:
        facts = c.get(f"/v1/assets/{facts_id}/content").json()
        meta = c.get(f"/v1/assets/{facts_id}").json()["metadata"]
    assert meta["job_id"] == job["id"]
    track = facts["tracks"][0]
    frame = track["frames"][0]["frame"]
    # The link an ask citation of that track gets (the asset's metadata names its job).
    stored = Asset(
        id=facts_id,
        location="site1",
        project=None,
        kind="scene_facts",
        filename="walk.scene_facts.json",
        mime_type="application/json",
        size=1,
        sha256="",
        created_at=0.0,
        metadata=meta,
    )
    svc: Any = SimpleNamespace(locations=SimpleNamespace(db=lambda _loc: None))
    cite = Citation(
        source="track",
        id=f"{facts_id}#{track['id']}",
        quote="square",
        asset_id=facts_id,
        track_id=track["id"],
        t=0.0,
        frame=frame,
    )
    answer = Answer(answer="a", found=True, citations=[cite], retrieved=[], model="m", ms=1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_assets, "find", lambda _db, _loc, _id: stored)
        [row] = view.cited(svc, "site1", answer)
    assert row["href"] == f"/admin/jobs/{job['id']}?track={track['id']}&frame={frame}"
    visit(browser, box, row["href"], "ask-track-frame")
    chosen = browser.find_element(By.CSS_SELECTOR, "#frames figure.selected")
    assert chosen.get_attribute("data-selected-track") == str(track["id"])
    assert str(track["id"]) in (chosen.get_attribute("data-tracks") or "").split()
    img = chosen.find_element(By.TAG_NAME, "img")
    others = browser.find_elements(By.CSS_SELECTOR, "#frames figure:not(.selected) img")
    assert all(o.get_attribute("loading") == "lazy" for o in others)
    assert img.get_attribute("loading") != "lazy"  # in view at once
    assert str(img.get_attribute("src")).endswith(f"?track={track['id']}")
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img
        )
    )
    assert browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.top < window.innerHeight && r.bottom > 0;",
        chosen,
    ), "the chosen frame is not in view"
    index = chosen.get_attribute("data-frame")
    plain = httpx.get(f"{box.url}/admin/jobs/{job['id']}/frames/{index}", cookies=_cookies(browser))
    marked = httpx.get(str(img.get_attribute("src")), cookies=_cookies(browser))
    assert plain.status_code == marked.status_code == 200
    assert marked.headers["content-type"] == "image/jpeg" and plain.content != marked.content
    try:
        caption = text(browser, "#frame-chosen")
    except NoSuchElementException:
        caption = ""
    assert f"track {track['id']}" in caption
