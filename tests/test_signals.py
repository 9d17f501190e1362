"""Every command stops on SIGINT, SIGTERM and SIGHUP whatever its stdout and stderr are, here a pipe whose reader
is gone: what `sftmix score ... 2>&1 | tee log` meets when the Ctrl-C reaches `tee` too, and `tee` dies first. The
exit code is the usual one (130 for SIGINT; SIGTERM and SIGHUP keep their default action), there is no traceback,
and nothing is left running. (`sftmix dashboard`, which runs a server, has its own tests in
tests/dashboard/test_launch.py.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tests.signals import default_signals

if os.name != "posix":
    pytest.skip("sends POSIX signals", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SFTMIX = [sys.executable, "-m", "profiler"]


def _session_left(sid: int) -> list[int]:
    """Processes still running (not zombies) in session ``sid``."""
    out = subprocess.run(["ps", "-o", "pid=,stat=", "-s", str(sid)], capture_output=True, text=True).stdout
    return [int(f[0]) for f in (line.split() for line in out.splitlines()) if f and not f[1].startswith("Z")]


def _read_until(fd: int, marker: bytes, proc: subprocess.Popen, timeout: float = 120) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {marker!r} (exit status {proc.poll()}):\n{seen.decode(errors='replace')}")
        seen += os.read(fd, 65536)
    return seen


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_score_stops_on_a_signal_after_its_output_reader_died(tiny_llama, tmp_path, sig):
    """Scoring, its progress bar drawn on stderr, stdout and stderr one pipe; the reader is gone by the time the
    signal is handled (the process is stopped meanwhile, so nothing it writes can come in between): exit code 130
    for SIGINT (its line could not be written, and is dropped rather than turned into a traceback and code 1),
    the default action for SIGTERM and SIGHUP, nothing left running."""
    rows = [{"instruction": f"Question {i}: what is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(600)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    argv = [*SFTMIX, "score", "--model", str(tiny_llama), "--data", str(data), "--out", str(tmp_path / "run.duckdb")]
    argv += ["--max-batch-size", "1", "--no-embed", "--no-ifd"]
    r, w = os.pipe()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv, stdout=w, stderr=w, env=env, cwd=ROOT, start_new_session=True, preexec_fn=default_signals
    )
    os.close(w)
    try:
        _read_until(r, b"scoring checkpoint", proc)
        time.sleep(0.5)  # some batches scored
        os.kill(proc.pid, signal.SIGSTOP)
        os.close(r)  # the reader (tee) is gone...
        r = None
        os.kill(proc.pid, getattr(signal, sig))  # ...before the signal is handled
        os.kill(proc.pid, signal.SIGCONT)
        code = proc.wait(timeout=60)
        expected = {130} if sig == "SIGINT" else {-getattr(signal, sig), 128 + getattr(signal, sig)}
        assert code in expected, f"{sig}: exit status {code}"
        deadline = time.monotonic() + 10
        while left := _session_left(proc.pid):
            assert time.monotonic() < deadline, f"{sig}: processes {left} left running"
            time.sleep(0.1)
    finally:
        if r is not None:
            os.close(r)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_output_whose_reader_is_gone_stops_quietly(tmp_path):
    """`sftmix info run.duckdb | head -0`: stdout's reader is gone before the output is written. Exit code 141 (as
    if SIGPIPE had ended it), and stderr stays empty (no traceback, no "Exception ignored" at exit)."""
    from benchmarks.synthetic import write_synthetic_profile

    table = write_synthetic_profile(tmp_path / "syn.duckdb", 20, n_checkpoints=2)
    r, w = os.pipe()
    os.close(r)
    err = tmp_path / "stderr.log"
    with err.open("w") as f:
        p = subprocess.run([*SFTMIX, "info", str(table)], stdout=w, stderr=f, cwd=ROOT, timeout=120)
    os.close(w)
    assert p.returncode == 141, err.read_text()
    assert err.read_text() == ""
