"""A real browser: `sftmix dashboard` on a free port, headless Chromium (Debian's package) loads the pages.

Skipped where no Chromium is installed, unless ``SFTMIX_REQUIRE_BROWSER=1`` (CI sets it, after installing
Chromium): then a missing browser fails. Screenshots go to ``$SFTMIX_ARTIFACTS`` (default: the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

from benchmarks.synthetic import write_synthetic_profile
from dashboard.launch import free_port
from tests.conftest import N_BAD, N_CHAT, N_FAQ
from tests.dashboard.conftest import N_INJECT, SCRIPT
from tests.dashboard.test_launch import SFTMIX, start_server, stop_group, wait_healthy
from tests.dashboard.test_tokens import direct_tokens, inject_id

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("SFTMIX_REQUIRE_BROWSER") == "1":
        raise RuntimeError("SFTMIX_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed")
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@contextmanager
def serve(table: Path, tmp_path: Path, *options: str):
    """`sftmix dashboard TABLE [OPTIONS]` on a free port, in a process group of its own that the exit stops
    entirely."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server([*SFTMIX, "dashboard", str(table), *options, "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        stop_group(proc)


@pytest.fixture
def server(small_profile, tmp_path):
    with serve(small_profile, tmp_path) as url:
        yield url


@pytest.fixture
def token_server(token_profile, tmp_path):
    """The dashboard on the profile with token scores at every checkpoint, IFD, and an example holding a script."""
    with serve(token_profile, tmp_path) as url:
        yield url


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


def until(driver, condition, timeout: float = 30):
    """``condition(driver)`` once it is truthy. Streamlit redraws elements on every rerun, so an element found a
    moment ago can be gone when it is read: such a read is tried again, not reported (an AssertionError still fails
    at once)."""
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.25,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition)


def wait_for_text(driver, *texts: str, timeout: float = 45) -> str:
    def ready(d):
        body = d.find_element(By.TAG_NAME, "body").text
        return body if all(t in body for t in texts) else False

    try:
        return until(driver, ready, timeout)
    except Exception:
        pytest.fail(f"page never showed {texts}; it shows:\n{driver.find_element(By.TAG_NAME, 'body').text}")


def wait_for_element(driver, css: str, timeout: float = 45):
    """The first element matching ``css``, once the page has drawn it (the sidebar can come after the body)."""
    try:
        return until(driver, lambda d: (found := d.find_elements(By.CSS_SELECTOR, css)) and found[0], timeout)
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
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"))
    screenshot(browser, "dashboard_overview.png", tmp_path)
    # The sources table shows all of its columns: its grid needs no horizontal scrolling (in half of the page, its
    # last columns were cut off). The grid is drawn once it is scrolled into view.
    scroll_to(browser, "//h3[contains(., 'Sources')]")
    content, shown = until(browser, lambda d: (widths := grid_widths(d, "Sources")) and widths[0] > 0 and widths)
    assert content <= shown + 1, (content, shown)
    screenshot(browser, "dashboard_sources.png", tmp_path)

    # /home and /overview open the overview too (Streamlit serves the default page at "/", not at its url_path).
    for alias in ("/home", "/overview"):
        browser.get(server + alias)
        body = wait_for_text(browser, "Overview", "Examples", "Sources")
        assert "Page not found" not in body and f"Examples\n{N_FAQ + 10 + N_BAD}" in body
        until(browser, lambda d: d.current_url.rstrip("/") == server)

    browser.get(server + "/semantic_map")
    wait_for_text(browser, "Semantic map", "UMAP of mean-pooled final hidden states", "Density: all 30 embedded")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot canvas"))
    axis_titles = until(browser, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".xtitle, .ytitle")])
    assert axis_titles == ["UMAP 1", "UMAP 2"]
    screenshot(browser, "dashboard_semantic_map.png", tmp_path)

    # SQL-looking search text in the sidebar is just text: one match, no error, the table intact afterwards.
    browser.get(server + "/explorer")
    wait_for_text(browser, "Explorer", "31 examples match the filter")
    type_into(browser, "input[aria-label='Search text or example id']", "'; DROP TABLE examples; --", Keys.ENTER)
    body = wait_for_text(browser, "1 examples match the filter")
    assert "Error" not in body and "Traceback" not in body
    browser.get(server + "/explorer")
    wait_for_text(browser, "31 examples match the filter")
    # The explorer's table fits the page (its response column was cut off at the right edge).
    content, shown = until(browser, lambda d: (widths := grid_widths(d, "Explorer", "h1")) and widths[0] > 0 and widths)
    assert content <= shown + 1, (content, shown)
    screenshot(browser, "dashboard_explorer.png", tmp_path)
    print(f"first page rendered in {first_page:.1f}s")


def grid_widths(driver, heading: str, level: str = "h3") -> tuple[int, int] | None:
    """(content width, visible width) in pixels of the grid of the first table after the heading ``heading`` (an
    ``h3``, or another ``level``); None until it is drawn."""
    table = driver.find_element(
        By.XPATH, f"//{level}[contains(., '{heading}')]/following::*[@data-testid='stDataFrame']"
    )
    return driver.execute_script(
        "const s = arguments[0].querySelector('.dvn-scroller'); return s && [s.scrollWidth, s.clientWidth];", table
    )


def scroll_to(driver, xpath: str) -> None:
    """Scroll the element at ``xpath`` to the top (found again if a rerun replaced it in between)."""
    until(
        driver,
        lambda d: d.execute_script(
            "arguments[0].scrollIntoView({block: 'start'}); return true;", d.find_element(By.XPATH, xpath)
        ),
    )
    time.sleep(0.3)


def type_into(driver, css: str, *keys: str) -> None:
    wait_for_element(driver, css)
    until(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).send_keys(*keys) or True)


def test_token_view_shows_injected_html_as_text(token_server, token_profile, browser, tmp_path):
    """An example whose response holds a <script> (setting the title and window.__pwned), <b> and an <img onerror>:
    the token view shows them as text, and none of them runs or becomes an element."""
    browser.get(token_server + "/explorer")
    wait_for_text(browser, "Explorer", f"{N_FAQ + N_CHAT + N_BAD + N_INJECT} examples match the filter")
    type_into(browser, "input[aria-label='Search text or example id']", "pwned", Keys.ENTER)
    wait_for_text(browser, "1 examples match the filter", "Response tokens")
    until(browser, lambda d: SCRIPT in d.find_element(By.CSS_SELECTOR, ".sftmix-tokens").text)
    toks, nll = direct_tokens(token_profile, inject_id(token_profile))

    def view_is_inert_text(d) -> bool:
        view = d.find_element(By.CSS_SELECTOR, ".sftmix-tokens")
        assert "<b>bold</b>" in view.text and '<img src=x onerror="window.__pwned=2">' in view.text
        assert "pwned" not in d.title
        assert d.execute_script("return window.__pwned === undefined && !document.querySelector('img[src=x]')")
        assert not view.find_elements(By.CSS_SELECTOR, "script, b, img")
        # One span per token, in order, with the token and its NLL in its title (the tooltip); whitespace kept.
        spans = view.find_elements(By.CSS_SELECTOR, "span[title]")
        assert len(spans) == len(toks)
        first = spans[0].get_attribute("title")
        assert first.startswith(json.dumps(toks[0], ensure_ascii=False) + f" · NLL {nll[2][0]:.3f}")
        assert d.execute_script("return getComputedStyle(arguments[0]).whiteSpace", view) == "pre-wrap"
        return True

    until(browser, view_is_inert_text)
    scroll_to(browser, "//*[contains(text(), 'Shade tokens by')]")
    screenshot(browser, "dashboard_token_view.png", tmp_path)
    # What the reference learned: the change from the first to the last checkpoint.
    until(
        browser,
        lambda d: d.find_element(By.XPATH, "//label[contains(., 'What the reference learned')]").click() or True,
    )
    until(
        browser,
        lambda d: "Δ NLL" in d.find_element(By.CSS_SELECTOR, ".sftmix-tokens span[title]").get_attribute("title"),
    )
    assert "pwned" not in browser.title and browser.execute_script("return window.__pwned === undefined")
    scroll_to(browser, "//*[contains(text(), 'Shade tokens by')]")
    screenshot(browser, "dashboard_token_change.png", tmp_path)

    browser.get(token_server + "/hard_tokens")
    wait_for_text(browser, "Hard tokens", "distinct tokens seen at least 5 times")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"))
    screenshot(browser, "dashboard_hard_tokens.png", tmp_path)


@pytest.fixture(scope="module")
def big_profile(tmp_path_factory) -> Path:
    """200,000 synthetic examples (seconds to write): many more than a map draws as points."""
    return write_synthetic_profile(tmp_path_factory.mktemp("big_profile") / "big.duckdb", 200_000)


def plot_traces(driver) -> list[dict] | None:
    """The type, name, number of points and (for lines) coordinates of the first chart's traces, as plotly drew
    them."""
    return driver.execute_script(
        "const g = document.querySelector('.js-plotly-plot'); if (!g || !g._fullData) return null;"
        "return g._fullData.map(t => ({type: t.type, name: t.name, n: t._length || 0,"
        " x: t.mode === 'lines' ? Array.from(t.x) : null, y: t.mode === 'lines' ? Array.from(t.y) : null}));"
    )


def draw_lasso(driver, loop: list[tuple[float, float]]) -> None:
    """A lasso on the first chart, drawn with the mouse through ``loop``: its vertices as fractions of the plot
    area's width and height from its centre."""
    drag = wait_for_element(driver, ".js-plotly-plot .nsewdrag")
    w, h = drag.size["width"], drag.size["height"]
    actions = ActionChains(driver).move_to_element_with_offset(drag, int(loop[0][0] * w), int(loop[0][1] * h))
    actions.click_and_hold()
    for (ax, ay), (bx, by) in zip(loop, loop[1:]):
        for k in range(1, 6):
            f = k / 5
            actions.move_to_element_with_offset(drag, int((ax + f * (bx - ax)) * w), int((ay + f * (by - ay)) * h))
    actions.release().perform()


def test_a_map_of_200k_examples_draws_them_all_and_a_lasso_selects_every_one_inside(big_profile, browser, tmp_path):
    """The semantic map of 200k examples: a density layer of every one under 5,000 points; a lasso drawn with the
    mouse selects every example inside it (not only the points), counted against the table's coordinates read
    directly; the explorer then lists exactly them."""
    con = duckdb.connect(str(big_profile), read_only=True)
    xy = np.array(con.execute("SELECT umap_x, umap_y FROM embeddings").fetchall(), dtype=float)
    con.close()
    with serve(big_profile, tmp_path) as url:
        browser.get(url + "/semantic_map")
        wait_for_text(browser, "Semantic map", f"Density: all {len(xy):,} embedded examples", "5,000 drawn on top")
        traces = until(browser, lambda d: (t := plot_traces(d)) and len(t) > 1 and t)
        assert traces[0]["type"] == "heatmap" and {t["type"] for t in traces[1:]} == {"scattergl"}
        assert sum(t["n"] for t in traces[1:]) == 5_000
        screenshot(browser, "dashboard_semantic_map_200k.png", tmp_path)
        draw_lasso(browser, [(-0.3, -0.3), (0.0, -0.1), (0.3, -0.3), (0.3, 0.3), (0.0, 0.1), (-0.3, 0.3), (-0.3, -0.3)])
        body = wait_for_text(browser, "examples inside the lasso on the semantic map: the explorer and export")
        shown = int(re.search(r"([\d,]+) examples inside the lasso", body).group(1).replace(",", ""))
        outline = until(browser, lambda d: next((t for t in plot_traces(d) or [] if t["name"] == "selection"), None))
        polygon = np.column_stack([outline["x"][:-1], outline["y"][:-1]])
        expected = int(PolygonPath(polygon).contains_points(xy).sum())
        assert shown == expected and 5_000 < expected < len(xy)  # far more than the points drawn inside it
        screenshot(browser, "dashboard_semantic_map_lasso.png", tmp_path)
        until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid='stSidebarNav'] a[href$='explorer']"))
        browser.find_element(By.CSS_SELECTOR, "[data-testid='stSidebarNav'] a[href$='explorer']").click()
        wait_for_text(browser, "Explorer", f"{expected:,} examples match the filter")


def test_a_lasso_on_the_compare_scatter_selects_the_common_examples_inside(
    small_profile, other_profile, browser, tmp_path
):
    """`sftmix dashboard A --compare B`: a lasso drawn with the mouse on the compare scatter selects every common
    example whose place (log10 mean perplexity in A and in B) is inside its outline; the explorer lists them."""
    from profiler.table.compare import compare_tables

    joined = compare_tables(small_profile, other_profile).joined
    xy = np.column_stack([np.log10(-joined["confidence_a"].to_numpy()), np.log10(-joined["confidence_b"].to_numpy())])
    with serve(small_profile, tmp_path, "--compare", str(other_profile)) as url:
        browser.get(url + "/compare")
        wait_for_text(browser, "Compare two profiles", "Density: all", "examples change split")
        until(browser, lambda d: (t := plot_traces(d)) and len(t) > 1 and t)
        draw_lasso(browser, [(-0.4, -0.4), (0.0, -0.4), (0.0, 0.4), (-0.4, 0.4), (-0.4, -0.4)])
        body = wait_for_text(browser, "examples inside the lasso on the compare scatter: the explorer and export")
        shown = int(re.search(r"([\d,]+) examples inside the lasso", body).group(1).replace(",", ""))
        outline = until(browser, lambda d: next((t for t in plot_traces(d) or [] if t["name"] == "selection"), None))
        inside = PolygonPath(np.column_stack([outline["x"][:-1], outline["y"][:-1]])).contains_points(xy)
        screenshot(browser, "dashboard_compare_lasso.png", tmp_path)
        assert shown == int(inside.sum()) and 0 < shown < len(xy)
        browser.find_element(By.CSS_SELECTOR, "[data-testid='stSidebarNav'] a[href$='explorer']").click()
        wait_for_text(browser, "Explorer", f"{shown:,} examples match the filter")
