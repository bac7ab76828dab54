"""The admin page's splat viewer on a real splat: `fieldbox up` runs a splat job on real
photos (12 of monstree's), the job page opens the .ply in Spark on WebGL2 (SwiftShader, as
on a box with no GPU), and the render from a training camera's pose matches that camera's
photo. That proves what a standard viewer reads from the .ply is right: orientation
(COLMAP's camera axes against three.js's), colour from the SH DC term, opacities and
scales in the 3DGS reference conventions. A wrong pose, a wrong axis flip or wrong colours
would fall to the level of the other cameras' photos."""

from __future__ import annotations

import base64
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.admin.box import Box, start_box
from tests.admin.chromium import SHOTS, SOFTWARE_WEBGL, chromium, js_errors, sign_in, visit
from tests.realdata import monstree
from tests.system.helpers import client, create_location, tus_create, tus_finish, wait_job

pytest.importorskip("torch")
pytest.importorskip("pycolmap")
# The splat job (about 70 s alone) runs in the first test's set-up, which pytest-timeout
# counts against that test; on a busy machine it took over 300 s.
pytestmark = pytest.mark.timeout(900)

PHOTOS = 12
# Small enough for about a minute of training on 2 cores; the figures below are its own.
CONFIG = """
[queue]
lease_s = 5.0
max_attempts = 1
[worker]
heartbeat_s = 0.5
poll_s = 0.2
kinds = ["splat"]
[splat]
max_side = 240
iterations = 600
max_gaussians = 4000
checkpoint_every = 1000
"""
# Measured (docs/admin.md), four runs: Spark's render from three training poses against
# their own photos 20.4-21.3, 20.4-22.4, 17.3-18.0 and 15.8-21.9 dB (the last camera of
# a CI run, SfM and training are not bit-for-bit repeatable); against the best of the
# other photos 10.8-15.4 dB. The margin is what tells a render of this camera from one of
# another; the floor only says it is a render of the scene at all.
MIN_PSNR_DB = 15.0
MIN_MARGIN_DB = 4.0

Json = dict[str, Any]


@pytest.fixture(scope="module")
def splat_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Box, str, Path]]:
    """`fieldbox up` with a splat job finished on 12 real photos: (box, job id, the ZIP)."""
    tmp = tmp_path_factory.mktemp("splatbox")
    photos = sorted(monstree().glob("*.jpg"))[:PHOTOS]
    capture = tmp / "trunk.zip"
    with zipfile.ZipFile(capture, "w") as zf:
        for p in photos:
            zf.write(p, p.name)
    box = start_box(tmp, CONFIG)
    try:
        with client(box.url, box.token) as c:
            create_location(c, "site1")
            data = capture.read_bytes()
            asset = tus_finish(c, tus_create(c, "site1", len(data), capture.name), data)
            r = c.post("/v1/jobs", json={"kind": "splat", "asset_id": asset})
            assert r.status_code == 202, r.text
            done = wait_job(c, r.json()["id"], {"succeeded", "failed", "dead"}, timeout=900)
            assert done["status"] == "succeeded", done
        yield box, done["id"], capture
    finally:
        box.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium with WebGL2 in software."""
    driver = chromium(
        tmp_path_factory.mktemp("chromium"), tmp_path_factory.mktemp("dl"), SOFTWARE_WEBGL
    )
    yield driver
    driver.quit()


def _settled(driver: WebDriver, viewer: WebElement, timeout: float = 180) -> None:
    """Wait until the viewer says its frame is drawn (or failed)."""
    WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        lambda d: (
            viewer.get_attribute("data-state") == "ready"
            or viewer.get_attribute("data-error")
            or viewer.get_attribute("data-spark-error")
        )
    )
    assert viewer.get_attribute("data-error") is None, viewer.get_attribute("data-error")
    assert viewer.get_attribute("data-spark-error") is None, viewer.get_attribute(
        "data-spark-error"
    )


def _canvas(driver: WebDriver, viewer: WebElement) -> np.ndarray:
    """The viewer's canvas as an RGB array, read back through toDataURL."""
    url = driver.execute_script("return arguments[0].querySelector('canvas').toDataURL()", viewer)
    png = base64.b64decode(str(url).split(",", 1)[1])
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _view(driver: WebDriver, viewer: WebElement, index: int) -> np.ndarray:
    """Switch the viewer to training camera `index`, wait for its frame, read it."""
    driver.execute_script("arguments[0].fieldboxView(arguments[1])", viewer, index)
    _settled(driver, viewer)
    assert viewer.get_attribute("data-view") == f"camera:{index}"
    return _canvas(driver, viewer)


def _training_frames(capture: Path, out: Path) -> dict[str, np.ndarray]:
    """The photos as the job trained on them (the product's own decode), RGB by name."""
    from perception.splat.photos import extract_photos

    out.mkdir()
    extract_photos(capture, out, max_side=240, max_frames=60, progress=lambda _: None)
    frames = {}
    for p in sorted(out.glob("*.jpg")):
        bgr = cv2.imread(str(p))
        assert bgr is not None, p
        frames[p.name] = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of the same shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def test_spark_renders_the_real_splat_from_its_training_cameras(
    browser: WebDriver, splat_box: tuple[Box, str, Path], tmp_path: Path
) -> None:
    """The job page draws the job's own .ply in Spark (not the soft-dot fallback); from each
    of three training cameras the render matches that camera's photo far better than the
    other cameras' photos; no JavaScript error."""
    box, job_id, capture = splat_box
    with httpx.Client(base_url=box.url, headers={"Authorization": f"Bearer {box.token}"}) as c:
        result: Json = c.get(f"/v1/jobs/{job_id}").json()["result"]
        cameras: Json = c.get(f"/v1/assets/{result['cameras_asset_id']}/content").json()
    sign_in(browser, box)
    visit(browser, box, f"/admin/jobs/{job_id}")
    viewer = browser.find_element(By.ID, "splat-viewer")
    _settled(browser, viewer)
    assert viewer.get_attribute("data-renderer") == "spark"
    assert viewer.get_attribute("data-gaussians") == str(result["quality"]["gaussians"])
    options = browser.find_elements(By.CSS_SELECTOR, "[data-splat-camera] option")
    assert len(options) == 1 + len(cameras["frames"])  # orbit, then every registered camera
    browser.execute_script("arguments[0].scrollIntoView()", viewer)
    browser.save_screenshot(str(SHOTS / "splat-spark.png"))

    photos = _training_frames(capture, tmp_path / "frames")
    trained = [i for i, f in enumerate(cameras["frames"]) if not f["held_out"]]
    picks = [trained[0], trained[len(trained) // 2], trained[-1]]
    figures = []
    for i in picks:
        frame = cameras["frames"][i]
        render = _view(browser, viewer, i)
        assert render.shape == (frame["height"], frame["width"], 3)
        own = psnr(render, photos[frame["name"]])
        others = [
            psnr(render, photo)
            for name, photo in photos.items()
            if name != frame["name"] and photo.shape == render.shape
        ]
        cv2.imwrite(
            str(SHOTS / f"splat-camera-{i}.png"),
            cv2.cvtColor(np.hstack([render, photos[frame["name"]]]), cv2.COLOR_RGB2BGR),
        )
        figures.append((i, round(own, 2), round(max(others), 2)))
    (SHOTS / "splat-psnr.json").write_text(json.dumps(figures))
    for _, own, best_other in figures:
        assert own >= MIN_PSNR_DB, figures
        assert own >= best_other + MIN_MARGIN_DB, figures
    assert js_errors(browser) == []


def test_the_orbit_view_and_the_camera_menu(
    browser: WebDriver, splat_box: tuple[Box, str, Path]
) -> None:
    """Choosing "orbit" in the menu leaves the camera pose and draws a new frame; a camera
    chosen by `?camera=N` opens there."""
    box, job_id, _ = splat_box
    visit(browser, box, f"/admin/jobs/{job_id}?camera=1")
    viewer = browser.find_element(By.ID, "splat-viewer")
    _settled(browser, viewer)
    assert viewer.get_attribute("data-view") == "camera:1"
    camera_view = _canvas(browser, viewer)
    menu = browser.find_element(By.CSS_SELECTOR, "[data-splat-camera]")
    browser.execute_script(
        "arguments[0].value = ''; arguments[0].dispatchEvent(new Event('change'))", menu
    )
    _settled(browser, viewer)
    assert viewer.get_attribute("data-view") == "orbit"
    orbit = _canvas(browser, viewer)
    assert orbit.shape != camera_view.shape or psnr(orbit, camera_view) < 30
    assert orbit.mean() > 5, "the orbit view drew nothing"
    assert js_errors(browser) == []
