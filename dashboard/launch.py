"""`sftmix dashboard run.duckdb`: start Streamlit on the app with the table (read-only), on localhost by default."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from dashboard import COMPARE_ENV, TABLE_ENV
from profiler.errors import SftmixError
from profiler.table.reader import open_table

APP = Path(__file__).with_name("app.py")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dashboard_command(*, port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line (without the environment that names the tables)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def dashboard_env(table: str | Path, compare: str | Path | None = None) -> dict[str, str]:
    """The environment naming the tables, after checking that each opens as an sftmix table."""
    env = dict(os.environ)
    for name, path in ((TABLE_ENV, table), (COMPARE_ENV, compare)):
        if path is None:
            env.pop(name, None)
            continue
        open_table(path).close()  # a clear error now rather than in the browser
        env[name] = str(Path(path).resolve())
    return env


def run_dashboard(
    table: str | Path, *, port: int = 8501, host: str = "127.0.0.1", compare: str | Path | None = None
) -> int:
    """Serve the dashboard until interrupted; returns Streamlit's exit status."""
    try:
        import streamlit  # noqa: F401
    except ImportError as e:
        raise SftmixError("the dashboard needs Streamlit: pip install 'sftmix[dashboard]'") from e
    env = dashboard_env(table, compare)
    port = port or free_port(host)
    print(f"sftmix dashboard: http://{host}:{port}  (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(dashboard_command(port=port, host=host), env=env)
    except KeyboardInterrupt:
        return 0
