"""Stopping `sftmix dashboard` stops its server: SIGTERM, SIGHUP or SIGINT to the process that was started (what a
process manager, `timeout`, a container stop or a terminal sends) leaves nothing serving on the port and nothing
running. Both ways of running Streamlit are checked: the process becoming the server (exec, POSIX) and the
fallback where Streamlit is a child that gets the signals forwarded.

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

from dashboard.launch import free_port
from tests.signals import default_signals

if os.name != "posix":
    pytest.skip("sends POSIX signals to process groups", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
SFTMIX = [sys.executable, "-m", "profiler"]
# The same CLI with exec turned off: Streamlit runs as a child and the signals are forwarded to it.
SFTMIX_FORWARDING = [
    sys.executable,
    "-c",
    "import sys\n"
    "import dashboard.launch\n"
    "dashboard.launch.CAN_EXEC = False\n"
    "from profiler.cli import main\n"
    "sys.exit(main())\n",
]
# Exit statuses that mean "stopped by this signal" (Streamlit's own stop, the signal itself, or 128 + N).
STOPPED = {
    "SIGTERM": {0, -signal.SIGTERM, 128 + signal.SIGTERM},
    "SIGHUP": {0, -signal.SIGHUP, 128 + signal.SIGHUP},
    "SIGINT": {0, -signal.SIGINT, 128 + signal.SIGINT},
}


# --- helpers for tests that start a real server ---
def start_server(argv: list[str], log: Path) -> subprocess.Popen:
    """Start ``argv`` in a process group of its own (so a teardown can reach whatever it leaves), output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT, preexec_fn=default_signals
        )


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
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
            pytest.fail(f"the dashboard did not start (exit status {proc.poll()}):\n{log.read_text()}")
        time.sleep(0.2)


def group_members(pgid: int) -> list[int]:
    """The processes still running (not zombies) in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs: any member, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] not in "ZX" and int(fields[2]) == pgid:
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
    """Teardown: SIGTERM the server's whole process group, wait, SIGKILL whatever is left."""
    pgid = proc.pid  # started with start_new_session=True: the group is the leader's PID
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while group_members(pgid) and time.monotonic() < deadline:
            proc.poll()  # reap the leader once it exits
            time.sleep(0.1)
        if not group_members(pgid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):  # unkillable (stuck in the kernel): nothing more to do
        proc.wait(timeout=grace)


# --- the tests ---
@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    from benchmarks.synthetic import write_synthetic_profile

    return write_synthetic_profile(tmp_path_factory.mktemp("launch") / "syn.duckdb", 60, n_checkpoints=2)


def assert_stopped(proc: subprocess.Popen, port: int, log: Path, sig: str, timeout: float = 10) -> None:
    """Within ``timeout``: the process has exited with a stopped-by-``sig`` status, nothing of its process group
    runs, the port is free, and the log shows no traceback."""
    deadline = time.monotonic() + timeout
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{sig}: sftmix (PID {proc.pid}) still runs after {timeout}s:\n{log.read_text()}")
    while (left := group_members(proc.pid)) or not port_free(port):
        if time.monotonic() > deadline:
            pytest.fail(
                f"{sig}: sftmix exited ({code}) but left processes {left} running and port {port} "
                f"{'free' if port_free(port) else 'serving'}:\n{log.read_text()}"
            )
        time.sleep(0.1)
    text = log.read_text()
    assert code in STOPPED[sig], f"{sig}: exit status {code}\n{text}"
    assert "Traceback" not in text, text


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
@pytest.mark.parametrize("cli", [SFTMIX, SFTMIX_FORWARDING], ids=["exec", "forwarding"])
def test_signal_to_sftmix_stops_the_server(table, tmp_path, cli, sig):
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server([*cli, "dashboard", str(table), "--port", str(port)], log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        os.kill(proc.pid, getattr(signal, sig))  # to that process only, as a process manager or `timeout` does
        assert_stopped(proc, port, log, sig)
    finally:
        stop_group(proc)


def test_ctrl_c_while_starting_is_quiet(table, tmp_path):
    """SIGINT as soon as the URL line is out (the hand-over to Streamlit): a quiet stop, nothing left behind."""
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server([*SFTMIX, "dashboard", str(table), "--port", str(port)], log)
    try:
        deadline = time.monotonic() + 60
        while "sftmix dashboard: http://" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no URL line (exit status {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGINT)
        assert_stopped(proc, port, log, "SIGINT")
    finally:
        stop_group(proc)
