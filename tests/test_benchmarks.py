"""The benchmark scripts still run (tiny shapes, synthetic data): the GPU runbook in benchmarks/README.md
depends on them, and a GPU session has no time to debug them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_scoring_synthetic(chat_tokenizer_dir):
    out = _run(
        "bench_scoring.py",
        "--shape",
        "tiny",
        "--synthetic",
        "--tokenizer",
        str(chat_tokenizer_dir),
        "--n",
        "12",
        "--repeat",
        "1",
    )
    assert "12 examples" in out and "speed-up:" in out
    diff = float(out.split("max |mean NLL difference|:")[1].split()[0])
    assert diff < 1e-4


@pytest.mark.slow
def test_bench_profile_stages(chat_tokenizer_dir, tmp_path):
    out = _run(
        "bench_profile.py",
        "--shape",
        "tiny",
        "--n",
        "16",
        "--n-checkpoints",
        "2",
        "--batch-size",
        "4",
        "--tokenizer",
        str(chat_tokenizer_dir),
        "--workdir",
        str(tmp_path),
    )
    for stage in ("data (render + tokenize)", "finetune (1 epoch, C checkpoints saved)", "score (2 checkpoints"):
        assert stage in out
    assert "16 synthetic examples" in out
    assert not (tmp_path / "checkpoints").exists()  # the script cleans up its checkpoints


@pytest.mark.slow
def test_bench_token_scores(chat_tokenizer_dir):
    import re

    out = _run(
        "bench_token_scores.py",
        *("--shape", "tiny", "--synthetic", "--tokenizer", str(chat_tokenizer_dir)),
        *("--n", "8", "--n-checkpoints", "2", "--repeat", "1"),
    )
    rows = dict(re.findall(r"^(none|last \+ IFD|last|all) .*\((\d+) token rows\)", out, re.MULTILINE))
    assert rows == {"none": "0", "last": "8", "all": "16", "last + IFD": "8"}  # rows per example and checkpoint
    assert "token scores (last) vs none:" in out and "8 synthetic examples; 2 checkpoints" in out
