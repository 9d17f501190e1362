"""`sftmix dashboard run.duckdb`: start Streamlit on the app with the table (read-only), on localhost by default.

Stopping ``sftmix dashboard`` stops the server. On POSIX the process becomes Streamlit (``exec``, same PID), so
SIGTERM, SIGINT and SIGHUP from a process manager, ``timeout``, a container stop or a terminal reach the server
itself. Elsewhere Streamlit runs as a child and ``sftmix`` forwards those signals to it and waits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from dashboard import COMPARE_ENV, TABLE_ENV
from profiler.errors import SftmixError
from profiler.table.reader import open_table

APP = Path(__file__).with_name("app.py")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# Streamlit's command line (``python -m streamlit``), except that a Ctrl-C before its server is up (it then sets
# its own handler: "Stopping...", status 0) ends the process at once with status 130, not a KeyboardInterrupt
# traceback from the middle of an import. A SIGINT ignored on entry stays ignored.
STREAMLIT_MAIN = (
    "import os, signal, sys\n"
    "if signal.getsignal(signal.SIGINT) is signal.default_int_handler:\n"
    "    signal.signal(signal.SIGINT, lambda *_: os._exit(130))\n"
    "from streamlit.web.cli import main\n"
    "sys.exit(main(prog_name='streamlit'))\n"
)


def dashboard_command(*, port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line (without the environment that names the tables)."""
    return [
        sys.executable,
        "-c",
        STREAMLIT_MAIN,
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


# Replace the process with Streamlit (POSIX); elsewhere run it as a child and forward the stop signals.
CAN_EXEC = os.name == "posix"
# The signals that stop the dashboard, forwarded to Streamlit when it runs as a child.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK") if hasattr(signal, name)
)


def run_dashboard(
    table: str | Path, *, port: int = 8501, host: str = "127.0.0.1", compare: str | Path | None = None
) -> int:
    """Serve the dashboard until stopped (Ctrl-C, SIGTERM, SIGHUP).

    After the checks (the tables open, Streamlit imports) and the URL line, the process becomes the Streamlit
    server where it can (POSIX ``exec``): then this never returns, and the exit status is Streamlit's. Otherwise
    Streamlit runs as a child that gets the stop signals this process receives; returns its exit status (128 + N
    when signal N ended it).
    """
    try:
        import streamlit  # noqa: F401
    except ImportError as e:
        raise SftmixError("the dashboard needs Streamlit: pip install 'sftmix[dashboard]'") from e
    env = dashboard_env(table, compare)
    port = port or free_port(host)
    argv = dashboard_command(port=port, host=host)
    print(f"sftmix dashboard: http://{host}:{port}  (Ctrl-C stops it)", flush=True)
    if CAN_EXEC:
        exec_server(argv, env)  # returns only if the exec failed
    return serve_child(argv, env)


def exec_server(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process with ``argv``; returns (signals as they were) only if the exec fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    # Python ignores SIGPIPE and SIGXFSZ; an exec keeps ignored signals ignored, so give Streamlit the defaults,
    # as subprocess does for a child.
    restored = {}
    for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
        if hasattr(signal, name):
            sig = getattr(signal, name)
            restored[sig] = signal.signal(sig, signal.SIG_DFL)
    try:
        os.execve(argv[0], argv, env)
    except OSError:
        for sig, handler in restored.items():
            signal.signal(sig, handler)


def serve_child(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` as a child, forwarding SIGTERM, SIGINT and SIGHUP to it, until it exits; its exit status."""
    proc = subprocess.Popen(argv, env=env)
    forwarded: dict[int, object] = {}

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            if os.name == "posix":
                proc.send_signal(signum)
            elif signum == signal.SIGTERM:  # Windows: the console itself sends Ctrl-C and Ctrl-Break to the child
                proc.terminate()
        except OSError:  # it has just exited
            pass

    try:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in STOP_SIGNALS:
                forwarded[sig] = signal.signal(sig, forward)
        code = proc.wait()
    finally:
        for sig, handler in forwarded.items():
            signal.signal(sig, handler)
        if proc.poll() is None:  # an error in this process: never leave the server behind
            proc.kill()
            proc.wait()
    return code if code >= 0 else 128 - code
