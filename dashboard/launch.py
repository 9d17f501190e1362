"""`sftmix dashboard run.duckdb`: start Streamlit on the app with the table (read-only), on localhost by default.

``sftmix`` checks the tables and the port (a port that another program holds is an error before anything is
printed; ``--port 0`` picks a free one), prints the URL, and then supervises the Streamlit server, which runs as
its child in a process group of its own. SIGINT, SIGTERM and SIGHUP to ``sftmix`` (a terminal's Ctrl-C or
hang-up, a process manager, ``timeout``, a container stop) stop the server: it is sent SIGTERM, killed if it has
not stopped :data:`GRACE` seconds later (or at a second signal), and ``sftmix`` exits once it is gone, with status
128 + N for signal N. Whatever the server's output is (a pipe whose reader died on the same Ctrl-C, a terminal
that hung up), its writes cannot fail, so nothing keeps it from stopping. Should ``sftmix`` itself be killed
(SIGKILL), the server notices (a pipe from ``sftmix`` reaches end of file) and stops too.

Why a child in a group of its own rather than ``exec``: the server then gets one stop signal, from ``sftmix``, and
only SIGTERM, which ends a Python interpreter quietly at any moment of its start-up (a SIGINT during the import of
``site`` is a "Fatal Python error"); and ``sftmix`` can kill a server that does not stop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from dashboard import COMPARE_ENV, TABLE_ENV
from profiler.errors import SftmixError

APP = Path(__file__).with_name("app.py")
# Seconds a stopping server gets before it is killed.
GRACE = 5.0
# Names the server's end of the pipe whose end of file tells it that sftmix is gone.
LIFELINE_ENV = "SFTMIX_LIFELINE"
# The signals that stop the dashboard.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK") if hasattr(signal, name)
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port(port: int, host: str = "127.0.0.1") -> int:
    """The port to serve on: ``port`` if a server can listen on it now (bound as Streamlit binds it), or for
    ``port`` 0 a free one that the OS picks; a one-line :class:`SftmixError` if another program holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            if os.name != "nt":  # as Streamlit does: a closed server's TIME_WAIT does not count, a listener does
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen()
            return s.getsockname()[1]
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            why = "is in use by another program" if e.errno == errno.EADDRINUSE else "is not allowed here"
            raise SftmixError(
                f"port {port} on {host} {why}: choose another with --port N (--port 0 picks a free one)"
            ) from e
        raise SftmixError(f"cannot serve on {host} port {port}: {e.strerror or e}") from e


# The server process's main (``python -c``). Its output cannot fail: once a reader is gone (EPIPE: a `tee` that died
# on the same Ctrl-C) or a terminal hung up (EIO), that stream goes to os.devnull. Otherwise Streamlit's stop, which
# first prints "Stopping...", raises in an event-loop callback that asyncio only logs, and the server runs on,
# deaf to every further SIGINT and SIGTERM. A SIGINT (sent to it alone) arrives blocked, so that none lands while
# the interpreter starts; until Streamlit sets its handler it ends the process quietly with status 130 (one
# ignored on entry stays ignored). When the pipe from sftmix reaches end of file (sftmix is gone, even by
# SIGKILL), the server stops as on SIGTERM, and ends itself if it has not within the grace period. (POSIX only:
# elsewhere the process is started without the pipe, and Ctrl-C reaches it from the console.)
SERVER_MAIN = (
    f"GRACE = {GRACE!r}\nLIFELINE_ENV = {LIFELINE_ENV!r}\n"
    + """\
import os, signal, sys, threading, time


class QuietStream:
    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError:
            self._drop()
            return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        try:
            self._stream.flush()
        except OSError:
            self._drop()

    def _drop(self):
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


if sys.stdout is not None:
    sys.stdout = QuietStream(sys.stdout)
if sys.stderr is not None:
    sys.stderr = QuietStream(sys.stderr)


def watch_parent(fd):
    while True:
        try:
            if not os.read(fd, 1):
                break
        except OSError:
            break
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # wakes it from epoll_wait() at once
    time.sleep(GRACE)
    os._exit(1)


lifeline = os.environ.pop(LIFELINE_ENV, None)
if lifeline:
    threading.Thread(target=watch_parent, args=(int(lifeline),), daemon=True).start()
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
if hasattr(signal, "pthread_sigmask"):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
from streamlit.web.cli import main

sys.exit(main(prog_name="streamlit"))
"""
)


def dashboard_command(*, port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line (without the environment that names the tables)."""
    return [
        sys.executable,
        "-c",
        SERVER_MAIN,
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
    from profiler.table.reader import open_table

    env = dict(os.environ)
    env.pop(LIFELINE_ENV, None)
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
    """Serve the dashboard until stopped (Ctrl-C, SIGTERM, SIGHUP); the exit status (128 + N after signal N).

    The checks come first: the tables open, Streamlit imports, the port is free (``port`` 0: a free one is picked).
    Then the URL line, then the server runs as a child (:func:`serve_child`) on that concrete port.
    """
    try:
        import streamlit  # noqa: F401
    except ImportError as e:
        raise SftmixError("the dashboard needs Streamlit: pip install 'sftmix[dashboard]'") from e
    env = dashboard_env(table, compare)
    port = check_port(port, host)
    argv = dashboard_command(port=port, host=host)
    print(f"sftmix dashboard: http://{host}:{port}  (Ctrl-C stops it)", flush=True)
    code = serve_child(argv, env)
    if code == 1:  # Streamlit's status when it cannot bind: another program took the port since the check
        with contextlib.suppress(SftmixError):
            check_port(port, host)
            return code
        raise SftmixError(
            f"port {port} on {host} was taken by another program while the server started: "
            "run the same command again, or choose another port with --port N (--port 0 picks a free one)"
        )
    return code


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread (a child started meanwhile inherits the mask); one that arrived meanwhile is
    delivered at the end."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _send(proc: subprocess.Popen, sig: int) -> None:
    """Signal ``proc`` unless it has been reaped (its PID could then be another process's)."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(OSError):  # it has just exited
        if os.name == "posix":
            os.kill(proc.pid, sig)
        else:  # Windows: one way to stop a process
            proc.terminate()


def serve_child(argv: list[str], env: dict[str, str], *, grace: float = GRACE) -> int:
    """Run ``argv`` as a child in a process group of its own until it exits; the exit status.

    SIGINT, SIGTERM and SIGHUP to this process are turned into SIGTERM to the child, and into SIGKILL when it
    still runs ``grace`` seconds later or at a second signal. After such a signal the status is 128 + N for the
    (first) signal N; otherwise it is the child's (128 + N when signal N ended it). The child is never left
    behind: an error here kills it, and should this process die, the child's end of a pipe from it (named by
    ``SFTMIX_LIFELINE``) reaches end of file.
    """
    posix = os.name == "posix"
    kill = getattr(signal, "SIGKILL", signal.SIGTERM)
    received: list[int] = []
    proc: subprocess.Popen | None = None
    timer: threading.Timer | None = None

    def escalate() -> None:
        """Act on the signals received so far: SIGTERM at the first (then SIGKILL ``grace`` seconds later, if it
        still runs), SIGKILL at the next."""
        nonlocal timer
        if proc is None or not received:
            return
        if len(received) > 1:
            _send(proc, kill)
        elif timer is None:
            if posix or received[0] == signal.SIGTERM:  # Windows: the console sends Ctrl-C and Ctrl-Break to it too
                _send(proc, signal.SIGTERM)
            timer = threading.Timer(grace, _send, (proc, kill))
            timer.daemon = True
            timer.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        escalate()  # before the child exists: as soon as it does

    previous: dict[int, object] = {}
    previous_wakeup: int | None = None
    fds: list[int] = []  # closed at the end
    wake_r = lifeline_r = None
    try:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in STOP_SIGNALS:
                previous[sig] = signal.signal(sig, stop)
            if posix:
                # The OS may hand a signal to any thread (polars and jemalloc run some here): that one runs the C
                # handler, and the main thread, blocked in waitpid(), would run ours only once the child exits. So
                # it waits in select() on Python's wakeup fd, which each signal writes to (SIGCHLD: the child exited).
                wake_r, wake_w = os.pipe()
                fds += [wake_r, wake_w]
                os.set_blocking(wake_r, False)
                os.set_blocking(wake_w, False)
                previous_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
                previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        kwargs: dict = {}
        if posix:
            lifeline_r, lifeline_w = os.pipe()
            fds.append(lifeline_w)  # open as long as this process runs: the child stops at its end of file
            env = {**env, LIFELINE_ENV: str(lifeline_r)}
            kwargs = {"process_group": 0, "pass_fds": (lifeline_r,)}
        try:
            with _sigint_blocked():
                proc = subprocess.Popen(argv, env=env, **kwargs)
        finally:
            if lifeline_r is not None:
                os.close(lifeline_r)
        escalate()  # the signals that came before the child existed
        code = _wait(proc, wake_r)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous_wakeup is not None:
            signal.set_wakeup_fd(previous_wakeup)
        if timer is not None:
            timer.cancel()
        if proc is not None and proc.poll() is None:  # an error in this process: never leave the server behind
            proc.kill()
            proc.wait()
        for fd in fds:
            os.close(fd)
    if received:
        return 128 + received[0]
    return code if code >= 0 else 128 - code


def _wait(proc: subprocess.Popen, wake_r: int | None) -> int:
    """Wait for ``proc`` to exit; with ``wake_r`` (the read end of the wakeup fd), in select() on it, so that the
    signal handlers run as soon as any signal arrives."""
    if wake_r is None:
        return proc.wait()
    while (code := proc.poll()) is None:
        select.select([wake_r], [], [])
        with contextlib.suppress(BlockingIOError):
            while os.read(wake_r, 512):
                pass
    return code
