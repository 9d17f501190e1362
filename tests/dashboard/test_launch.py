"""Stopping `sftmix dashboard` stops its server: SIGTERM, SIGHUP or SIGINT to the process that was started (what a
process manager, `timeout`, a container stop or a terminal sends) leaves nothing serving on the port and nothing
running, whatever its output is (a terminal, a file, a pipe whose reader died first, as a `tee` does on the same
Ctrl-C), and whenever the signal lands, the server's start-up included, on a loaded machine. A busy port is an
error before any URL is printed; `--port 0` serves on a free port and prints it.

The helpers here also serve the other tests that start a real server (the browser test).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard.launch import GRACE, free_port
from profiler.cli import main
from tests.signals import default_signals

if os.name != "posix":
    pytest.skip("sends POSIX signals to process groups", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
SFTMIX = [sys.executable, "-m", "profiler"]
SIGNALS = ["SIGTERM", "SIGHUP", "SIGINT"]
# What may never appear in the output of a stop: a traceback, an exception that asyncio logged and swallowed, an
# interpreter that died while starting.
NOT_QUIET = ("Traceback", "Exception", "Fatal Python error", "KeyboardInterrupt")


# --- helpers for tests that start a real server ---
def start_server(argv: list[str], log: Path | None = None, **streams) -> subprocess.Popen:
    """Start ``argv`` in a session (and process group) of its own, so that a teardown can reach whatever it leaves,
    with output to ``log`` (or to the ``stdout``/``stderr`` given)."""
    with contextlib.ExitStack() as stack:
        if log is not None:
            streams = {"stdout": stack.enter_context(log.open("w")), "stderr": subprocess.STDOUT}
        return subprocess.Popen(argv, **streams, start_new_session=True, cwd=ROOT, preexec_fn=default_signals)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path | None, timeout: float = 60) -> None:
    """Wait until Streamlit's health endpoint at ``url`` answers 200; fail (with the log) if it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the dashboard did not start (exit status {proc.poll()}):\n{_text(log)}")
        time.sleep(0.2)


def _text(log: Path | None) -> str:
    return log.read_text() if log is not None and log.exists() else "(no log)"


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after "pid (comm)": state ppid pgrp session ...; None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session_members(sid: int) -> list[int]:
    """The processes still running (not zombies) in session ``sid``: the server runs in a process group of its own,
    in the session of the `sftmix` that started it."""
    if not Path("/proc").is_dir():  # no procfs: ask ps
        out = subprocess.run(["ps", "-o", "pid=,stat=", "-s", str(sid)], capture_output=True, text=True).stdout
        return [int(pid) for pid, stat in (line.split()[:2] for line in out.splitlines()) if not stat.startswith("Z")]
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(stat.parent.name)
        if fields and fields[0] not in "ZX" and int(fields[3]) == sid:
            members.append(int(stat.parent.name))
    return members


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing accepts connections on ``port``, and a new server could bind it."""
    with socket.socket() as s:
        s.settimeout(2)
        if s.connect_ex((host, port)) == 0:
            return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT does not count
        try:
            s.bind((host, port))
            s.listen()
        except OSError:
            return False
    return True


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """Teardown: SIGTERM the leader (started with start_new_session=True), wait, SIGKILL whatever is left of its
    session."""
    sid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while session_members(sid) and time.monotonic() < deadline:
        proc.poll()  # reap the leader once it exits
        time.sleep(0.1)
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # unkillable (stuck in the kernel): nothing more to do
        proc.wait(timeout=grace)


# --- the tests ---
@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    from benchmarks.synthetic import write_synthetic_profile

    return write_synthetic_profile(tmp_path_factory.mktemp("launch") / "syn.duckdb", 60, n_checkpoints=2)


def assert_stopped(proc: subprocess.Popen, port: int, log: Path | None, sig: str, timeout: float = 15) -> int:
    """Within ``timeout``: the process has exited, nothing of its session runs, the port is free, and the log (if
    there is one) shows no traceback. Returns the exit status."""
    deadline = time.monotonic() + timeout
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{sig}: sftmix (PID {proc.pid}) still runs after {timeout}s:\n{_text(log)}")
    while (left := session_members(proc.pid)) or not port_free(port):
        if time.monotonic() > deadline:
            pytest.fail(
                f"{sig}: sftmix exited ({code}) but left processes {left} running and port {port} "
                f"{'free' if port_free(port) else 'serving'}:\n{_text(log)}"
            )
        time.sleep(0.1)
    if log is not None:
        text = log.read_text()
        assert not [w for w in NOT_QUIET if w in text], f"{sig}: not a quiet stop (exit status {code}):\n{text}"
    return code


@pytest.mark.parametrize("target", ["process", "group"])
@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_to_sftmix_stops_the_server(table, tmp_path, sig, target):
    """To that process only, as a process manager or `timeout` does; or to its process group, as a terminal does."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server([*SFTMIX, "dashboard", str(table), "--port", str(port)], log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        (os.kill if target == "process" else os.killpg)(proc.pid, getattr(signal, sig))
        assert assert_stopped(proc, port, log, sig) == 128 + getattr(signal, sig)
    finally:
        stop_group(proc)


@pytest.mark.parametrize(
    ("sig", "dead"), [("SIGINT", "both"), ("SIGTERM", "both"), ("SIGHUP", "both"), ("SIGINT", "stdout")]
)
def test_stops_when_its_output_reader_is_gone(table, tmp_path, sig, dead):
    """`sftmix dashboard ... 2>&1 | tee log`, and the Ctrl-C kills `tee` first: the server's "Stopping..." goes to a
    pipe without reader. That write must not keep the server up (it raised in an event-loop callback, which asyncio
    logs and forgets: the server went on serving and ignored every further SIGINT and SIGTERM)."""
    port = free_port()
    log = tmp_path / "stderr.log"
    r, w = os.pipe()
    try:
        with log.open("w") as err:
            proc = start_server(
                [*SFTMIX, "dashboard", str(table), "--port", str(port)], stdout=w, stderr=w if dead == "both" else err
            )
        os.close(w)
        w = None
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, log)
            os.close(r)  # the reader is gone before the signal comes
            r = None
            os.kill(proc.pid, getattr(signal, sig))
            code = assert_stopped(proc, port, log if dead == "stdout" else None, sig)
            assert code == 128 + getattr(signal, sig), _text(log)
        finally:
            stop_group(proc)
    finally:
        for fd in (r, w):
            if fd is not None:
                os.close(fd)


def test_server_stops_when_sftmix_is_killed(table, tmp_path):
    """SIGKILL to `sftmix` (no handler runs): the server sees the end of its pipe from sftmix and stops itself."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server([*SFTMIX, "dashboard", str(table), "--port", str(port)], log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        assert assert_stopped(proc, port, None, "SIGKILL", timeout=GRACE + 10) == -signal.SIGKILL
    finally:
        stop_group(proc)


def test_busy_port_is_an_error_before_any_url(table, capsys):
    """Another program listens on the port: one error line, exit code 2, and no URL (it would show the other
    program's page)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["dashboard", str(table), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"sftmix dashboard: error: port {port} on 127.0.0.1 is in use by another program: "
        "choose another with --port N (--port 0 picks a free one)"
    ]


def test_port_taken_while_the_server_starts(table, monkeypatch, capfd):
    """The port was free at the check and taken before Streamlit bound it: the same one-line error, exit code 2."""
    import dashboard.launch as launch

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        check_port = launch.check_port
        checks = []

        def free_at_first(port, host="127.0.0.1"):
            checks.append(port)
            return port if len(checks) == 1 else check_port(port, host)

        monkeypatch.setattr(launch, "check_port", free_at_first)
        assert main(["dashboard", str(table), "--port", str(port)]) == 2
    out, err = capfd.readouterr()
    assert f"port {port} on 127.0.0.1 was taken by another program while the server started" in err.splitlines()[-1]
    assert err.splitlines()[-1].startswith("sftmix dashboard: error: ")


def test_port_0_serves_on_a_free_port_and_prints_it(table, tmp_path):
    log = tmp_path / "server.log"
    proc = start_server([*SFTMIX, "dashboard", str(table), "--port", "0"], log)
    try:
        deadline = time.monotonic() + 60
        while "sftmix dashboard: http://127.0.0.1:" not in (text := log.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no URL line (exit status {proc.poll()}):\n{text}")
            time.sleep(0.05)
        url = text.split("sftmix dashboard: ", 1)[1].split()[0]
        port = int(url.rsplit(":", 1)[1])
        assert port != 0
        wait_healthy(url, proc, log)
        os.kill(proc.pid, signal.SIGTERM)
        assert assert_stopped(proc, port, log, "SIGTERM") == 128 + signal.SIGTERM
    finally:
        stop_group(proc)


# --- a Ctrl-C during start-up, on a loaded machine ---
def _server_process(sid: int) -> int | None:
    """The PID of the Python interpreter that runs Streamlit (its command line names streamlit.web.cli) in session
    ``sid``, once it has started."""
    for pid in session_members(sid):
        with contextlib.suppress(OSError):
            if b"streamlit.web.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


@pytest.fixture(scope="module")
def cpu_hogs():
    """Busy loops on every core (up to 4), so that each step of the start-up takes long enough to be hit."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=default_signals)
        for _ in range(min(os.cpu_count() or 1, 4))
    ]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


# When the SIGINT comes: as soon as the URL line is out (the server is being started); as soon as the server's
# interpreter exists (it starts up: importing `site`, where a KeyboardInterrupt is a "Fatal Python error"); and later
# in its start-up (importing Streamlit, binding the port, serving). To the process group, as a terminal's Ctrl-C;
# "server": to the server's process alone. The interpreter of `sftmix` itself starting is left out: a Ctrl-C in its
# first milliseconds is Python's own affair, as for any Python program.
MOMENTS = [("url", 0.0, "group"), ("exec", 0.0, "group"), ("exec", 0.0, "server"), ("exec", 0.3, "group")]
MOMENTS += [("exec", 1.0, "group"), ("exec", 2.0, "group")]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server's interpreter in /proc")
@pytest.mark.parametrize(("after", "delay", "to"), MOMENTS, ids=[f"{a}+{d}s-to-{t}" for a, d, t in MOMENTS])
def test_ctrl_c_while_starting_is_quiet(table, tmp_path, cpu_hogs, after, delay, to):
    """A SIGINT at any moment of the start-up, the machine busy: a quiet stop (exit code 130), nothing left."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server([*SFTMIX, "dashboard", str(table), "--port", str(port)], log)
    try:
        deadline = time.monotonic() + 90
        target = None
        while target is None:
            if after == "url" and "sftmix dashboard: http://" in log.read_text():
                target = proc.pid
            elif after == "exec":
                target = _server_process(proc.pid)
            if target is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the server did not start (exit status {proc.poll()}):\n{log.read_text()}")
                time.sleep(0.001)
        time.sleep(delay)
        if to == "server":
            os.kill(target, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: to the foreground process group
        assert assert_stopped(proc, port, log, "SIGINT", timeout=30) == 130
    finally:
        stop_group(proc)
