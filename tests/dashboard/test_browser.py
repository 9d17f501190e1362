"""A real browser: `sftmix dashboard` on a free port, headless Chromium (Debian's package) loads the pages.

Skipped where no Chromium is installed, unless ``SFTMIX_REQUIRE_BROWSER=1`` (CI sets it, after installing
Chromium): then a missing browser fails. Screenshots go to ``$SFTMIX_ARTIFACTS`` (default: the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from dashboard.launch import free_port
from tests.conftest import N_BAD, N_FAQ
from tests.dashboard.test_launch import SFTMIX, start_server, stop_group, wait_healthy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("SFTMIX_REQUIRE_BROWSER") == "1":
        raise RuntimeError("SFTMIX_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed")
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def server(small_profile, tmp_path):
    """`sftmix dashboard` on a free port, in a process group of its own that the teardown stops entirely."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server([*SFTMIX, "dashboard", str(small_profile), "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        stop_group(proc)


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1000",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def wait_for_text(driver, *texts: str, timeout: float = 45) -> str:
    def ready(d):
        body = d.find_element(By.TAG_NAME, "body").text
        return body if all(t in body for t in texts) else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(ready)
    except Exception:
        pytest.fail(f"page never showed {texts}; it shows:\n{driver.find_element(By.TAG_NAME, 'body').text}")


def wait_for_element(driver, css: str, timeout: float = 45):
    """The first element matching ``css``, once the page has drawn it (the sidebar can come after the body)."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(
            lambda d: (found := d.find_elements(By.CSS_SELECTOR, css)) and found[0]
        )
    except Exception:
        pytest.fail(f"page never drew {css!r}; it shows:\n{driver.find_element(By.TAG_NAME, 'body').text}")


def screenshot(driver, name: str, tmp_path: Path) -> Path:
    out = Path(os.environ.get("SFTMIX_ARTIFACTS") or tmp_path) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    assert out.stat().st_size > 10_000  # a real rendered page, not an empty image
    return out


def test_dashboard_in_chromium(server, browser, tmp_path):
    t0 = time.perf_counter()
    browser.get(server)
    body = wait_for_text(browser, "Overview", "Examples", "Confident", "Unconfident", "Checkpoints", "Sources")
    first_page = time.perf_counter() - t0
    # Metrics render as text (tables are drawn on a canvas, so they are checked through AppTest instead).
    assert f"Examples\n{N_FAQ + 10 + N_BAD}\nScored\n{N_FAQ + 10}\nConfident\n15\nUnconfident\n15" in body
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"))
    screenshot(browser, "dashboard_overview.png", tmp_path)

    browser.get(server + "/semantic_map")
    wait_for_text(browser, "Semantic map", "UMAP of mean-pooled final hidden states", "showing 30 of 30")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot canvas"))
    screenshot(browser, "dashboard_semantic_map.png", tmp_path)

    # SQL-looking search text in the sidebar is just text: one match, no error, the table intact afterwards.
    browser.get(server + "/explorer")
    wait_for_text(browser, "Explorer", "31 examples match the filter")
    box = wait_for_element(browser, "input[aria-label='Search text or example id']")
    box.send_keys("'; DROP TABLE examples; --", Keys.ENTER)
    body = wait_for_text(browser, "1 examples match the filter")
    assert "Error" not in body and "Traceback" not in body
    browser.get(server + "/explorer")
    wait_for_text(browser, "31 examples match the filter")
    print(f"first page rendered in {first_page:.1f}s")
