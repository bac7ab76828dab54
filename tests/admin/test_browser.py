"""The admin page in Debian's headless Chromium against a real `fieldbox up`, populated with
real state: sign in, every section, retry a failed job, create and revoke a key, sign out.
No page may log a JavaScript error; screenshots land in artifacts/admin/."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.admin.box import Box, populate, start_box
from tests.admin.chromium import SHOTS, chromium, js_errors, submit, text, visit
from tests.system.helpers import client


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """One populated `fieldbox up` for the whole module."""
    tmp = tmp_path_factory.mktemp("adminbox")
    running = start_box(tmp)
    try:
        populate(running, tmp)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium with no GPU at all (the splat viewer's fallback path)."""
    driver = chromium(tmp_path_factory.mktemp("chromium"), tmp_path_factory.mktemp("downloads"))
    yield driver
    driver.quit()


def test_sign_in_and_overview(browser: WebDriver, box: Box) -> None:
    """/admin without a session lands on the sign-in form; the admin key from `up` opens the
    overview with every process healthy and the machine's numbers."""
    visit(browser, box, "/admin")
    assert "/admin/login" in browser.current_url
    browser.find_element(By.ID, "token").send_keys(box.token)
    submit(browser, "#sign-in")
    assert browser.current_url == box.url + "/admin"
    visit(browser, box, "/admin", "overview")
    procs = {
        r.get_attribute("data-process"): r.text
        for r in browser.find_elements(By.CSS_SELECTOR, "#processes tbody tr")
    }
    for name in ("api", "gateway", "worker", "bridge"):
        assert name in procs, procs
    assert " ok " in f" {procs['api']} " and " ok " in f" {procs['gateway']} ", procs
    assert " ok " in f" {procs['worker']} ", procs
    assert any(n.startswith("backend ") and " ok " in f" {t} " for n, t in procs.items() if n)
    assert "fieldbox 0.1.0" in text(browser, "#version")
    assert "cores" in text(browser, "#machine") and "free of" in text(browser, "#machine")
    assert "succeeded" in text(browser, "#job-counts")


def test_models_answers_a_prompt_through_the_gateway(browser: WebDriver, box: Box) -> None:
    """The backends table shows the embedded model healthy; the prompt box gets an answer
    from it, and the last-hour charts then count that call."""
    visit(browser, box, "/admin/models")
    assert "smollm2-135m" in text(browser, "#backends") and "healthy" in text(browser, "#backends")
    browser.find_element(By.ID, "try-prompt").send_keys("Say hello.")
    submit(browser, "#try-send")
    time.sleep(0.5)
    answer = text(browser, "#try-answer")
    assert answer.strip() and "HTTP" not in answer, answer
    visit(browser, box, "/admin/models", "models")
    calls = int(text(browser, "#calls-total").split()[0])
    assert calls >= 1
    assert browser.find_elements(By.CSS_SELECTOR, ".chart canvas"), "no chart was drawn"


def test_jobs_retry_frames_and_splat(browser: WebDriver, box: Box) -> None:
    """The queue lists the jobs; a failed job retries from its page; the perception job shows
    its frames with boxes; the finished splat opens in the fallback viewer."""
    visit(browser, box, "/admin/jobs", "jobs")
    listed = {
        r.get_attribute("data-job")
        for r in browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    }
    assert {box.perception_job, box.failed_job, box.splat_job} <= listed
    visit(browser, box, f"/admin/jobs/{box.failed_job}")
    assert text(browser, "#job-status") in ("failed", "dead")
    before = len(browser.find_elements(By.CSS_SELECTOR, "#events tbody tr"))
    submit(browser, "#retry")
    assert "job queued again" in text(browser, ".flash")
    visit(browser, box, f"/admin/jobs/{box.failed_job}", "job-retried")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")) > before
    visit(browser, box, f"/admin/jobs/{box.perception_job}")
    shown = browser.find_elements(By.CSS_SELECTOR, "#frames figure[data-tracks]")
    assert shown and all(f.get_attribute("data-tracks") for f in shown), "no tracked frames"
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#frames img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    browser.save_screenshot(str(SHOTS / "job-scene-facts.png"))
    assert browser.find_elements(By.CSS_SELECTOR, "a[data-result=scene_facts_asset_id]")
    visit(browser, box, f"/admin/jobs/{box.splat_job}")
    viewer = browser.find_element(By.ID, "splat-viewer")
    WebDriverWait(browser, 20).until(
        lambda d: viewer.get_attribute("data-gaussians") or viewer.get_attribute("data-error")
    )
    assert viewer.get_attribute("data-error") is None
    assert viewer.get_attribute("data-gaussians") == "400"
    # No WebGL in this browser: the soft-dot preview, saying why (Spark: test_splat_viewer).
    assert viewer.get_attribute("data-renderer") == "soft-dot"
    assert viewer.get_attribute("data-fallback-reason") == "no WebGL2"
    browser.save_screenshot(str(SHOTS / "job-splat.png"))
    assert js_errors(browser) == []


def test_sync_without_a_bridge_and_sync_now(browser: WebDriver, box: Box) -> None:
    """The sync page shows the backlog and says honestly what runs; "sync now" reports its pass."""
    visit(browser, box, "/admin/sync")
    assert re.search(r"\d+ items", text(browser, "#backlog"))
    assert text(browser, "#bridge-state")
    submit(browser, "#sync-now")
    assert "sync pass started" in text(browser, ".flash")
    time.sleep(1.0)
    visit(browser, box, "/admin/sync", "sync")
    assert "no remote" in text(browser, "#last-pass")


def test_assets_list_search_and_download(browser: WebDriver, box: Box) -> None:
    """The upload is listed under its location; search narrows it; download gives its bytes."""
    visit(browser, box, "/admin/assets", "assets")
    assert "site1" in text(browser, "#locations")
    assert "walk.mp4" in text(browser, "#assets")
    field = browser.find_element(By.ID, "asset-q")
    field.send_keys("walk.mp4")
    submit(browser, "#asset-search button")
    rows = browser.find_elements(By.CSS_SELECTOR, "#assets tbody tr[data-asset]")
    assert [r.get_attribute("data-asset") for r in rows] == [box.video_asset]
    href = browser.find_element(By.CSS_SELECTOR, "#assets a[download]").get_attribute("href")
    cookie = browser.get_cookie("fbx_admin")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    got = httpx.get(str(href), cookies={"fbx_admin": cookie["value"]})
    with httpx.Client(base_url=box.url, headers={"Authorization": f"Bearer {box.token}"}) as c:
        assert got.content == c.get(f"/v1/assets/{box.video_asset}/content").content
    visit(browser, box, "/admin/assets?q=no-such-file")
    assert "no assets" in text(browser, "#assets")


def test_create_and_revoke_a_key(browser: WebDriver, box: Box) -> None:
    """A new field key's token is shown once and works; revoked, it stops working at once."""
    visit(browser, box, "/admin/access")
    assert "nothing" in text(browser, "#tunnel-plan") or "exposes" in text(browser, "#tunnel-plan")
    browser.find_element(By.ID, "key-name").send_keys("tablet-9")
    submit(browser, "#key-create")
    token = text(browser, "#new-token")
    browser.save_screenshot(str(SHOTS / "access-new-key.png"))
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(box.url + "/v1/locations", headers=auth).status_code == 200
    visit(browser, box, "/admin/access")
    assert not browser.find_elements(By.ID, "new-token"), "the token was shown twice"
    key_id = token.split("_")[1]
    browser.find_element(By.CSS_SELECTOR, f"[data-revoke='{key_id}']").click()
    browser.switch_to.alert.accept()
    WebDriverWait(browser, 20).until(
        lambda d: "revoked" in d.find_element(By.CSS_SELECTOR, f"tr[data-key='{key_id}']").text
    )
    assert httpx.get(box.url + "/v1/locations", headers=auth).status_code == 401
    visit(browser, box, "/admin/access", "access")


def test_logs_filter_by_level_and_process(browser: WebDriver, box: Box) -> None:
    """Every process's events are there; the filters narrow them."""
    visit(browser, box, "/admin/logs", "logs")
    seen = {
        r.get_attribute("data-process")
        for r in browser.find_elements(By.CSS_SELECTOR, "#logs tbody tr")
    }
    assert {"api", "gateway", "worker"} <= seen, seen
    visit(browser, box, "/admin/logs?process=worker")
    rows = browser.find_elements(By.CSS_SELECTOR, "#logs tbody tr[data-process]")
    assert rows and {r.get_attribute("data-process") for r in rows} == {"worker"}
    visit(browser, box, "/admin/logs?level=warning")
    levels = {
        r.get_attribute("data-level")
        for r in browser.find_elements(By.CSS_SELECTOR, "#logs tbody tr[data-level]")
    }
    assert levels <= {"warning", "error", "critical"}, levels


def test_phone_sized_screen(browser: WebDriver, box: Box) -> None:
    """On a 390 px wide screen nothing overflows sideways and the sections stay reachable."""
    browser.set_window_size(390, 844)
    try:
        for path, shot in (("/admin", "phone-overview"), ("/admin/jobs", "phone-jobs")):
            visit(browser, box, path, shot)
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= 400, f"{path} is {width}px wide on a phone"
        assert browser.find_element(By.CSS_SELECTOR, "[data-nav=logs]").is_displayed()
    finally:
        browser.set_window_size(1280, 900)


def test_sign_out(browser: WebDriver, box: Box) -> None:
    """Sign-out returns to the sign-in page, and the pages are closed again."""
    visit(browser, box, "/admin")
    submit(browser, "#sign-out")
    assert "/admin/login" in browser.current_url
    visit(browser, box, "/admin/sync")
    assert "/admin/login" in browser.current_url


def test_the_real_server_refuses_without_session_or_csrf(box: Box) -> None:
    """Against the real process: no cookie, a forged one, or a form post without the token."""
    with httpx.Client(base_url=box.url) as c:
        assert c.get("/admin/jobs").status_code == 303
        c.cookies.set("fbx_admin", "forged-" + "x" * 36, path="/admin")
        assert c.get("/admin").headers["location"].startswith("/admin/login")
        form = c.get("/admin/login")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        r = c.post("/admin/login", data={"token": box.token, "_csrf": csrf.group(1)})
        assert r.status_code == 303
        assert c.get("/admin").status_code == 200
        # A queued job no worker here claims (this box's worker runs perception only).
        with client(box.url, box.token) as api:
            r = api.post("/v1/jobs", json={"kind": "splat", "asset_id": box.video_asset})
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            refused = c.post(f"/admin/jobs/{job}/cancel", data={})
            assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
            after = api.get(f"/v1/jobs/{job}").json()
            assert after["status"] == "queued", after  # a queued job cancels at once
            # The same post with the session's token does cancel: the 403 was the CSRF check.
            page = c.get(f"/admin/jobs/{job}")
            token = re.search(r'name="_csrf" value="([^"]+)"', page.text)
            assert token is not None
            done = c.post(f"/admin/jobs/{job}/cancel", data={"_csrf": token.group(1)})
            assert done.status_code == 303
            assert api.get(f"/v1/jobs/{job}").json()["status"] == "cancelled"
        # An explicit Cookie header wins over the client's jar: a bearer token, no session.
        bearer = c.get(
            "/admin", headers={"Authorization": f"Bearer {box.token}", "Cookie": "fbx_admin="}
        )
        assert bearer.status_code == 303
        assert bearer.headers["location"] == "/admin/login?next=/admin"


def test_scene_facts_frames_are_the_jobs_own_frames_with_masks_drawn(box: Box) -> None:
    """The perception job kept its frames as an asset; the admin page's frame is that frame
    with each track's mask tinted in the track's own colour, and survives the work dir."""
    import io
    import shutil
    import zipfile

    import cv2

    from perception.overlay import track_colour
    from perception.scene_facts import rle_decode

    with client(box.url, box.token) as api:
        result = api.get(f"/v1/jobs/{box.perception_job}").json()["result"]
        facts = api.get(f"/v1/assets/{result['scene_facts_asset_id']}/content").json()
        stored = api.get(f"/v1/assets/{result['frames_asset_id']}/content").content
    kept = zipfile.ZipFile(io.BytesIO(stored))
    track = facts["tracks"][0]
    ob = track["frames"][len(track["frames"]) // 2]
    name = f"{ob['frame']:06d}.jpg"
    assert name in kept.namelist()
    raw = cv2.imdecode(np.frombuffer(kept.read(name), np.uint8), cv2.IMREAD_COLOR)
    assert raw is not None
    # The work dir's frames are scratch (a finished job's work dir is pruned): the page
    # must not need them.
    scratch = box.data_dir / "jobs" / box.perception_job / "perception" / "frames"
    shutil.rmtree(scratch, ignore_errors=True)
    assert not scratch.exists()
    with httpx.Client(base_url=box.url) as c:
        form = c.get("/admin/login")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        c.post("/admin/login", data={"token": box.token, "_csrf": csrf.group(1)})
        resp = c.get(f"/admin/jobs/{box.perception_job}/frames/{ob['frame']}")
        missing = c.get(f"/admin/jobs/{box.perception_job}/frames/99999")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    drawn = cv2.imdecode(np.frombuffer(resp.content, np.uint8), cv2.IMREAD_COLOR)
    assert drawn is not None
    assert drawn.shape == raw.shape
    mask = rle_decode(ob["mask"]).astype(np.uint8)
    inside = cv2.resize(mask, raw.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    colour = np.array(track_colour(track["id"]), float)
    before = np.linalg.norm(raw[inside].astype(float) - colour, axis=1).mean()
    after = np.linalg.norm(drawn[inside].astype(float) - colour, axis=1).mean()
    assert after < 0.7 * before  # the mask is tinted towards the track's colour
    near = np.zeros(mask.shape, np.uint8)
    for other in facts["tracks"]:
        for seen in other["frames"]:
            if seen["frame"] == ob["frame"]:
                x, y, w, h = seen["bbox"]
                near[max(0, y - 40) : y + h + 15, max(0, x - 15) : x + w + 15] = 1
    far = cv2.resize(near, raw.shape[1::-1], interpolation=cv2.INTER_NEAREST) == 0
    assert far.any()
    assert np.abs(drawn[far].astype(int) - raw[far].astype(int)).mean() < 6  # elsewhere not
