"""The dashboard's time to first page in a real browser (headless Chromium), for one source root.

For ``--root`` (default: the repository this file lives in) and ``--table``:

1. ``python -c "import profiler.table"`` in a fresh process with ``PYTHONPATH=ROOT``: wall time (median of
   ``--imports``) and whether torch ended up in ``sys.modules``;
2. the dashboard served from that root (``python -m streamlit run ROOT/dashboard/app.py ...``, in its own
   process group), then fresh headless Chromium sessions loading the page: the first load on the just-started
   server (measured from ``Popen`` to content drawn: the cold start), then ``--loads`` more (a new browser each,
   the server kept running), measured from the browser's navigation start to content drawn;
3. the server's process group killed at the end (always), and a check that nothing listens on the port.

"Drawn" is timed inside the page: a script installed before the page's own scripts
(``Page.addScriptToEvaluateOnNewDocument``) watches the DOM and records ``performance.now()`` (milliseconds since
navigation start) when each of these first appears: the sidebar's search box, the overview's first metric and
its first Plotly chart (both versions of the dashboard draw all three). Each figure is printed on its own line
with the CPU model, the date and the root. Compare two checkouts by running it for each, alternating::

    python benchmarks/synthetic.py /tmp/fp.duckdb --n 5000
    python benchmarks/bench_first_page.py --root /tmp/sftmix-before --table /tmp/fp.duckdb
    python benchmarks/bench_first_page.py --table /tmp/fp.duckdb

Needs selenium and Debian's chromium and chromium-driver (as ``tests/dashboard/test_browser.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What "the first page is drawn" means (the chart is the last of the three to appear).
MARKS = {
    "search box": "input[aria-label='Search text or example id']",
    "first metric": "[data-testid='stMetricValue']",
    "first chart": ".js-plotly-plot",
}

# Runs in every new document before the page's scripts: records when each mark's selector first matches.
OBSERVER = """
window.__marks = {};
(function () {
  const sels = %s;
  function check() {
    let left = 0;
    for (const [name, sel] of Object.entries(sels)) {
      if (window.__marks[name] === undefined) {
        if (document.querySelector(sel)) { window.__marks[name] = performance.now(); } else { left += 1; }
      }
    }
    return left;
  }
  const obs = new MutationObserver(() => { if (check() === 0) { obs.disconnect(); } });
  obs.observe(document, {childList: true, subtree: true, attributes: true});
})();
"""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def describe_root(root: Path) -> str:
    """The root with its commit (read-only git queries), and whether its tracked files have local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(root)
    return f"{root} ({head}{' + local changes' if dirty else ''})"


def table_env_name(root: Path) -> str:
    """The environment variable the root's dashboard reads the table from (``TABLE_ENV``), without importing it."""
    text = (root / "dashboard" / "__init__.py").read_text()
    found = re.search(r"^TABLE_ENV\s*=\s*[\"']([^\"']+)[\"']", text, re.MULTILINE)
    if not found:
        sys.exit(f"no TABLE_ENV in {root / 'dashboard' / '__init__.py'}")
    return found.group(1)


def root_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def measure_import(python: str, root: Path, repeats: int) -> tuple[list[float], bool]:
    """Wall times of ``import profiler.table`` in fresh processes (from a neutral directory), and torch loaded."""
    code = "import sys, profiler.table; print('torch' in sys.modules)"
    times, torch_loaded = [], set()
    with tempfile.TemporaryDirectory() as neutral:
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = subprocess.run(
                [python, "-c", code], cwd=neutral, env=root_env(root), capture_output=True, text=True, check=True
            )
            times.append(time.perf_counter() - t0)
            torch_loaded.add(out.stdout.strip() == "True")
    if len(torch_loaded) != 1:
        sys.exit("torch was loaded in some runs and not in others")
    return times, torch_loaded.pop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("the dashboard did not start:\n" + log.read_text()[-4000:])
        time.sleep(0.05)


def new_browser(profile_dir: Path, *, marks: bool = True, performance_log: bool = False):
    """Headless Chromium in a profile of its own: with ``marks``, the observer of the first page's elements is
    installed before every page's scripts; with ``performance_log``, the DevTools network events are logged."""
    from selenium import webdriver

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        sys.exit("needs Debian's chromium and chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
        "--window-size=1400,1000",
    ):
        opts.add_argument(flag)
    if performance_log:
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=chromedriver), options=opts)
    if marks:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": OBSERVER % json.dumps(MARKS)})
    return driver


def load_page(driver, url: str, timeout: float) -> tuple[dict[str, float], float]:
    """Navigate and wait for every mark; returns seconds since navigation start per mark, and the time origin
    (epoch seconds) of the navigation."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    try:
        marks = WebDriverWait(driver, timeout, poll_frequency=0.1).until(
            lambda d: (m := d.execute_script("return window.__marks || {}")) and len(m) == len(MARKS) and m
        )
    except Exception as e:
        seen = driver.execute_script("return window.__marks || {}")
        body = driver.execute_script("return document.body ? document.body.innerText : ''")
        raise RuntimeError(f"page never drew all of {list(MARKS)} (seen: {seen}); it shows:\n{body[:2000]}") from e
    origin = driver.execute_script("return performance.timeOrigin") / 1000
    return {k: v / 1000 for k, v in marks.items()}, origin


def torch_mapped(pid: int) -> bool:
    """Whether the server process has torch's shared libraries mapped (it imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            # the leader is gone; make sure no other member of the group survives
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
        break


def measure_pages(python: str, root: Path, table: Path, loads: int, port: int, timeout: float) -> dict:
    url = f"http://127.0.0.1:{port}"
    env = root_env(root, **{table_env_name(root): str(table)})
    cmd = [
        python,
        "-m",
        "streamlit",
        "run",
        str(root / "dashboard" / "app.py"),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    result: dict = {"cold": {}, "warm": {k: [] for k in MARKS}}
    with tempfile.TemporaryDirectory(prefix="bench-first-page-") as tmp:
        tmp = Path(tmp)
        log_path = tmp / "server.log"
        driver = proc = None
        with log_path.open("w") as log:
            try:
                # Cold: the browser is ready first; the clock starts at Popen and stops when the page draws.
                driver = new_browser(tmp / "profile-cold")
                t_popen = time.time()
                proc = subprocess.Popen(
                    cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                wait_healthy(url, proc, log_path, timeout)
                result["healthy"] = time.time() - t_popen
                marks, origin = load_page(driver, url, timeout)
                result["cold"] = {k: origin + v - t_popen for k, v in marks.items()}
                result["cold_nav"] = marks
                result["server_torch"] = torch_mapped(proc.pid)
                driver.quit()
                driver = None
                for i in range(loads):
                    driver = new_browser(tmp / f"profile-{i}")
                    marks, _ = load_page(driver, url, timeout)
                    for k, v in marks.items():
                        result["warm"][k].append(v)
                    driver.quit()
                    driver = None
            finally:
                if driver is not None:
                    driver.quit()
                if proc is not None:
                    stop_group(proc)
        deadline = time.time() + 10
        while listening(port) and time.time() < deadline:
            time.sleep(0.2)
        result["port_free"] = not listening(port)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=REPO, help="source root to serve from (default: this repository)")
    p.add_argument("--table", type=Path, required=True, help="the profile (.duckdb) the dashboard opens")
    p.add_argument("--imports", type=int, default=5, help="fresh `import profiler.table` processes (median)")
    p.add_argument("--loads", type=int, default=3, help="fresh browser sessions on the warm server (median)")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the imports and the server")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for the server or a page")
    args = p.parse_args(argv)
    root, table = args.root.resolve(), args.table.resolve()
    if not (root / "dashboard" / "app.py").is_file():
        p.error(f"{root} has no dashboard/app.py")
    if not table.is_file():
        p.error(f"no table at {table}")
    port = args.port or free_port()
    tail = f"| {cpu_model()} | {time.strftime('%Y-%m-%d %H:%M:%S %Z')} | root {describe_root(root)}"

    times, torch_loaded = measure_import(args.python, root, args.imports)
    runs = "/".join(f"{t:.2f}" for t in times)
    print(f"import profiler.table: median {statistics.median(times):.2f} s ({runs}) {tail}", flush=True)
    print(f"torch in sys.modules after import profiler.table: {'yes' if torch_loaded else 'no'} {tail}", flush=True)

    r = measure_pages(args.python, root, table, args.loads, port, args.timeout)
    print(f"torch loaded in the server after the first page: {'yes' if r['server_torch'] else 'no'} {tail}")
    print(f"server healthy (Popen to /_stcore/health 200): {r['healthy']:.2f} s {tail}")
    for k in MARKS:
        nav = r["cold_nav"][k]
        print(f"cold start, Popen to {k} drawn: {r['cold'][k]:.2f} s (navigation to drawn {nav:.2f} s) {tail}")
    for k in MARKS:
        ts = r["warm"][k]
        runs = "/".join(f"{t:.2f}" for t in ts)
        print(f"warm server, navigation to {k} drawn: median {statistics.median(ts):.2f} s ({runs}) {tail}")
    print(f"port {port} free after the server's process group was killed: {'yes' if r['port_free'] else 'NO'} {tail}")
    return 0 if r["port_free"] else 1


if __name__ == "__main__":
    sys.exit(main())
