"""Debian's headless Chromium for the admin tests: a driver with a fresh profile, and the
few steps every browser test takes (open a page, read text, submit, JavaScript errors)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.admin.box import Box
from tests.conftest import ROOT

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = ROOT / "artifacts" / "admin"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
NO_GPU = ("--disable-gpu", "--disable-webgl")
"""No WebGL at all: the splat viewer falls back to its soft-dot preview."""
SOFTWARE_WEBGL = ("--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader")
"""WebGL2 on the CPU (SwiftShader through ANGLE), as on a box or CI runner with no GPU."""

if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
    pytest.skip(
        "needs chromium and chromium-driver (make install adds them)", allow_module_level=True
    )


def chromium(profile: Path, downloads: Path, extra: tuple[str, ...] = NO_GPU) -> WebDriver:
    """Headless Chromium with a fresh profile in `profile`, its console log kept."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, *extra):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Attachments the tests open land here, not in the checkout.
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver: WebDriver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return driver


def console(driver: WebDriver) -> list[dict[str, str]]:
    """Every console entry logged since the last call."""
    logs: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return logs


def js_errors(driver: WebDriver) -> list[str]:
    """Console errors logged since the last call."""
    return [e["message"] for e in console(driver) if e["level"] == "SEVERE"]


def visit(driver: WebDriver, box: Box, path: str, shot: str = "") -> None:
    """Open a page, let its scripts run, fail on any JavaScript error; maybe a screenshot."""
    driver.get(box.url + path)
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    time.sleep(0.3)
    if shot:
        driver.save_screenshot(str(SHOTS / f"{shot}.png"))
    errors = js_errors(driver)
    assert errors == [], f"JavaScript errors on {path}: {errors}"


def text(driver: WebDriver, css: str) -> str:
    """The visible text of the first element matching `css`."""
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def submit(driver: WebDriver, css: str) -> None:
    """Click a button and wait for the next page to load."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    WebDriverWait(driver, 60).until(lambda d: old.id != d.find_element(By.TAG_NAME, "html").id)


def sign_in(driver: WebDriver, box: Box) -> None:
    """Sign in with the box's admin token through the real form."""
    visit(driver, box, "/admin")
    driver.find_element(By.ID, "token").send_keys(box.token)
    submit(driver, "#sign-in")
