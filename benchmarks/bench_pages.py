"""Every dashboard page in a real browser, at 1k and at 1M examples, in one headless-Chromium session.

    python benchmarks/bench_pages.py --small /tmp/dash1m/run1k.duckdb --large /tmp/dash1m/run.duckdb \
        [--compare-small B1K.duckdb --compare-large B1M.duckdb] [--repeats 3]

Each repeat starts two fresh ``sftmix dashboard TABLE --port N`` servers (free ports, one per table; with
``--compare-*``, ``--compare`` that table too, and the compare page is measured). One Chromium session serves every
repeat, the way a user clicks through the pages:

1. warm-up, not counted: the browser opens each server's overview once. This pays what a server pays once (building
   or opening the table's dashboard cache beside it, Streamlit's start) and fills the browser's cache of
   Streamlit's static files;
2. for each server (1k first on even repeats, 1M first on odd ones): the overview opened again (a new session;
   timed from navigation start), then a click on each sidebar link in order (the first visit: that page's script
   runs for the first time in this server), then a click on each link again, overview included (the revisit).

A page is drawn when its title (``h1``) is the page's, Streamlit is idle (the app's ``data-test-script-state`` is
``notRunning`` and no status widget shows), no element is stale or still a placeholder (``stSkeleton``: Streamlit
draws charts and tables once their code has loaded, after the script has finished), and every plotly chart has drawn
(``_fullLayout`` set, its SVG in place, no pending promise); the time is when that first held, kept only if it still
holds 150 ms later. Times are taken in the page (``performance.now()``), from the click. Bytes are what the browser
received from the click until the page is drawn (and 150 ms more): websocket frame payloads
(``Network.webSocketFrameReceived``, binary frames base64-decoded) plus HTTP responses (``Network.loadingFinished``
``encodedDataLength``), from Chrome's performance log.

Prints each measurement, then a table: medians of the repeats, and the median of the per-repeat ratios 1M/1k
(ratios of one run only, so that a loaded machine's drift cancels). Targets: every ratio within 1.5, and no page
over 20 MB. Needs selenium and Debian's chromium and chromium-driver (as ``tests/dashboard/test_browser.py``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_first_page import cpu_model, free_port, listening, stop_group, wait_healthy  # noqa: E402
from bench_first_page import new_browser as first_page_browser  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# (url path, sidebar link text, the page's title)
PAGES = [
    ("", "Overview", "Overview"),
    ("data_map", "Data map", "Data map"),
    ("semantic_map", "Semantic map", "Semantic map"),
    ("dynamics", "Training dynamics", "Training dynamics"),
    ("explorer", "Explorer", "Explorer"),
    ("hard_tokens", "Hard tokens", "Hard tokens"),
    ("export", "Export", "Export"),
]
COMPARE_PAGE = ("compare", "Compare", "Compare two profiles")
TARGET_RATIO = 1.5
TARGET_BYTES = 20_000_000
STABLE_MS = 150

# The "drawn" test, in the page (see the module's docstring).
DRAWN_JS = """
function drawn(title) {
  const h1 = [...document.querySelectorAll('h1')].map(h => h.innerText.trim());
  if (!h1.includes(title)) return false;
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;  // a chart or table still loading
  const boxes = document.querySelectorAll('[data-testid="stPlotlyChart"]');
  const plots = document.querySelectorAll('.js-plotly-plot');
  if (plots.length < boxes.length) return false;
  for (const gd of plots) {
    if (!gd._fullLayout || !gd.querySelector('.main-svg')) return false;
    if (gd._promises && gd._promises.length) return false;
  }
  return true;
}
"""

# arguments: the link's text ('' = no click: time from navigation start), the title, the timeout (ms), callback.
VISIT_JS = (
    DRAWN_JS
    + f"const STABLE_MS = {STABLE_MS};"
    + """
const [link, title, timeout, done] = arguments;
let t0 = 0;
if (link) {
  const a = [...document.querySelectorAll('[data-testid="stSidebarNavLink"]')].find(e => e.innerText.trim() === link);
  if (!a) { done({error: 'no sidebar link ' + link}); return; }
  t0 = performance.now();
  a.click();
}
let since = null;
(function tick() {
  const now = performance.now();
  if (drawn(title)) {
    if (since === null) since = now;
    if (now - since >= STABLE_MS) { done({ms: since - t0}); return; }
  } else {
    since = null;
  }
  if (now - t0 > timeout) { done({error: 'not drawn', body: document.body.innerText.slice(0, 1500)}); return; }
  setTimeout(tick, 10);
})();
"""
)


def new_browser(profile_dir: Path):
    """bench_first_page's browser, logging the network events (the bytes each page is sent)."""
    driver = first_page_browser(profile_dir, marks=False, performance_log=True)
    driver.set_script_timeout(600)
    return driver


def received_bytes(driver) -> int:
    """Bytes received since the last call: websocket frame payloads plus HTTP responses (the performance log)."""
    total = 0
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        method, params = msg["method"], msg.get("params", {})
        if method == "Network.webSocketFrameReceived":
            frame = params["response"]
            data = frame.get("payloadData", "")
            if frame.get("opcode") == 2:  # binary: base64 in the log
                total += len(base64.b64decode(data))
            else:
                total += len(data.encode())
        elif method == "Network.loadingFinished":
            total += int(params.get("encodedDataLength", 0))
    return total


def visit(driver, link: str, title: str, timeout: float) -> float:
    out = driver.execute_async_script(VISIT_JS, link, title, timeout * 1000)
    if "error" in out:
        raise RuntimeError(f"{title}: {out['error']}\n{out.get('body', '')}")
    return out["ms"] / 1000


def open_overview(driver, url: str, timeout: float) -> float:
    """Navigate to the overview; seconds from navigation start to drawn."""
    driver.get(url)
    return visit(driver, "", PAGES[0][2], timeout)  # performance.now() counts from navigation start


def start_server(table: Path, compare: Path | None, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "profiler", "dashboard", str(table), "--port", str(port)]
    if compare is not None:
        cmd += ["--compare", str(compare)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def one_pass(driver, url: str, pages: list, timeout: float) -> dict:
    """{(page, 'first'|'revisit'): (seconds, bytes)} for one click-through of a warm server. A page's bytes are
    those received from its click until it is drawn (and 150 ms more); anything later counts to the next page."""
    received_bytes(driver)  # drop what came before
    t = open_overview(driver, url, timeout)
    out = {(pages[0][0], "first"): (t, received_bytes(driver))}
    for kind, todo in (("first", pages[1:]), ("revisit", pages)):
        for slug, link, title in todo:
            t = visit(driver, link, title, timeout)
            out[(slug, kind)] = (t, received_bytes(driver))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=Path, required=True, help="the 1k profile")
    p.add_argument("--large", type=Path, required=True, help="the 1M profile")
    p.add_argument("--compare-small", type=Path, help="a second table for the small server's compare page")
    p.add_argument("--compare-large", type=Path, help="a second table for the large server's compare page")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=180, help="seconds for a server to start or a page to draw")
    args = p.parse_args(argv)
    if (args.compare_small is None) != (args.compare_large is None):
        p.error("give both --compare-small and --compare-large, or neither")
    pages = PAGES + ([COMPARE_PAGE] if args.compare_small else [])
    sizes = {"1k": (args.small, args.compare_small), "1M": (args.large, args.compare_large)}
    print(f"{cpu_model()} | {time.strftime('%Y-%m-%d %H:%M:%S %Z')} | load {os.getloadavg()}", flush=True)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        tmp = Path(tmp)
        driver = new_browser(tmp / "profile")
        try:
            for r in range(args.repeats):
                procs, urls = {}, {}
                try:
                    for size, (table, compare) in sizes.items():
                        port = free_port()
                        procs[size] = start_server(table, compare, port, tmp / f"server-{size}-{r}.log")
                        urls[size] = f"http://127.0.0.1:{port}"
                    for size in sizes:
                        wait_healthy(urls[size], procs[size], tmp / f"server-{size}-{r}.log", args.timeout)
                        t0 = time.perf_counter()
                        open_overview(driver, urls[size], args.timeout)
                        print(f"repeat {r + 1}: warm-up load of {size} (not counted) {time.perf_counter() - t0:.1f} s")
                    run = {}
                    for size in ["1k", "1M"] if r % 2 == 0 else ["1M", "1k"]:
                        run[size] = one_pass(driver, urls[size], pages, args.timeout)
                        cells = "  ".join(f"{s or 'overview'}/{k} {t:.2f}s" for (s, k), (t, _) in run[size].items())
                        print(f"repeat {r + 1} {size}: {cells}", flush=True)
                    runs.append(run)
                finally:
                    for proc in procs.values():
                        stop_group(proc)
                print(f"repeat {r + 1} done, load {os.getloadavg()}", flush=True)
        finally:
            driver.quit()
        time.sleep(1)
        left = [u for u in urls.values() if listening(int(u.rsplit(":", 1)[1]))]
        if left:
            print(f"still listening after the stop: {left}")

    def med(size, page, kind, i):
        return statistics.median(run[size][(page, kind)][i] for run in runs)

    def ratio(page, kind):
        return statistics.median(run["1M"][(page, kind)][0] / run["1k"][(page, kind)][0] for run in runs)

    print(f"\nmedians of {len(runs)} repeats; ratio = median over repeats of (1M / 1k) in the same repeat")
    print("| page | 1k first | 1M first | ratio | 1k revisit | 1M revisit | ratio | MB sent 1M first / revisit |")
    print("|---|---|---|---|---|---|---|---|")
    misses = []
    for slug, link, _ in pages:
        r1, r2 = ratio(slug, "first"), ratio(slug, "revisit")
        mb1, mb2 = med("1M", slug, "first", 1) / 1e6, med("1M", slug, "revisit", 1) / 1e6
        print(
            f"| {link.lower()} | {med('1k', slug, 'first', 0):.2f} s | {med('1M', slug, 'first', 0):.2f} s | {r1:.2f}x"
            f" | {med('1k', slug, 'revisit', 0):.2f} s | {med('1M', slug, 'revisit', 0):.2f} s | {r2:.2f}x"
            f" | {mb1:.2f} / {mb2:.2f} |"
        )
        misses += [f"{link} {k} {r:.2f}x" for k, r in (("first", r1), ("revisit", r2)) if r > TARGET_RATIO]
        misses += [f"{link} {mb:.1f} MB" for mb in (mb1, mb2) if mb * 1e6 > TARGET_BYTES]
    kb = "  ".join(f"{link.lower()} {med('1k', s, 'first', 1) / 1e3:.0f}" for s, link, _ in pages)
    print(f"\nkB sent at 1k, first visit: {kb}")
    print(f"load at the end {os.getloadavg()}")
    print("targets met" if not misses else "misses: " + "; ".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
