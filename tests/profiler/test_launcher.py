"""`sftmix profile` under a launcher: `torchrun --nproc_per_node 2 -m profiler profile ...` on two CPU processes
(gloo). Every rank fine-tunes (DDP) and scores its shard, rank 0 alone writes the table: complete, with the scores
of a one-process scoring of the same checkpoints, the fine-tune's losses of a one-process run with the same
global batch, the same run under `accelerate launch`, and a re-run after a rank was killed that resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from profiler import open_table
from profiler.config import FinetuneConfig, ScoreConfig
from profiler.pipeline import run_profile, run_score

ACCELERATE_DDP = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
num_processes: 2
machine_rank: 0
main_training_function: main
mixed_precision: 'no'
use_cpu: true
"""


def _profile_cmd(model, data, out, batch: int) -> list[str]:
    return [
        *("profile", "--model", str(model), "--data", *data, "--out", str(out)),
        *("--n-checkpoints", "2", "--batch-size", str(batch), "--learning-rate", "1e-3", "--warmup-ratio", "0"),
        *("--on-error", "skip", "--no-progress", "--device", "cpu", "--projection", "pca"),
    ]


def _torchrun(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "profiler", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def _losses(ckpt_dir: Path) -> list[float]:
    last = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def _scores(table) -> dict:
    with open_table(table) as t:
        return {(e, c): v for e, c, v in t.scores.select("example_id", "checkpoint_id", "nll_sum").iter_rows()}


@pytest.mark.slow
def test_torchrun_profile_is_complete_exact_and_resumes(tiny_llama, profile_data, tmp_path):
    out = tmp_path / "two" / "run.duckdb"
    # 30 scored examples in global batches of 6 (2 ranks x 3): 5 whole steps. (An uneven last batch would differ:
    # the rank without examples repeats some, as in any DDP run.)
    proc = _torchrun(_profile_cmd(tiny_llama, profile_data, out, batch=3))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "in use by another process" not in proc.stderr
    with open_table(out) as t:
        n_ok = t.examples.filter(t.examples["status"] == "ok").height
        assert t.examples.height == 31 and t.checkpoints.height == 2
        assert t.scores.height == 2 * n_ok and t.confidence.height == n_ok
        assert t.embeddings["umap_x"].null_count() == 0 and t.ifd.height == n_ok
        assert t.meta["launcher_world"] == 2 and t.meta["stages"]["embed"] == "done"
        ckpts = t.checkpoints["path"].to_list()
    assert not list(out.parent.glob("run.part-*"))  # merged once, then removed
    # The same checkpoints scored by one process: the same numbers.
    one = run_score(
        ScoreConfig(
            model=str(tiny_llama),
            data=profile_data,
            out=str(tmp_path / "one.duckdb"),
            checkpoints=ckpts,
            on_error="skip",
            progress=False,
            device="cpu",
            projection="pca",
        )
    )
    got, want = _scores(out), _scores(one)
    assert got.keys() == want.keys()
    assert all(abs(got[k] - want[k]) <= 1e-5 * max(1.0, abs(want[k])) for k in want)
    # The fine-tune: the losses of one process with the same global batch (2 ranks x 3 = 6).
    single = tmp_path / "single" / "run.duckdb"
    run_profile(
        ScoreConfig(
            model=str(tiny_llama),
            data=profile_data,
            out=str(single),
            on_error="skip",
            progress=False,
            device="cpu",
            projection="pca",
        ),
        FinetuneConfig(n_checkpoints=2, batch_size=6, learning_rate=1e-3, warmup_ratio=0.0),
    )
    two_losses, one_losses = _losses(out.parent / "run_checkpoints"), _losses(single.parent / "run_checkpoints")
    assert len(two_losses) == len(one_losses) >= 2
    assert two_losses == pytest.approx(one_losses, rel=1e-4)
    # `accelerate launch` with a DDP config (on the CPU: use_cpu) is the same run as torchrun's.
    config = tmp_path / "ddp.yaml"
    config.write_text(ACCELERATE_DDP)
    acc = tmp_path / "acc" / "run.duckdb"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    done = subprocess.run(
        [*launch, "--main_process_port", "29571", "-m", "profiler", *_profile_cmd(tiny_llama, profile_data, acc, 3)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(acc.parent / "run_checkpoints") == pytest.approx(two_losses, rel=1e-6)
    with open_table(acc) as t:
        assert t.meta["launcher_world"] == 2


@pytest.mark.slow
def test_a_rank_killed_while_scoring_resumes(tiny_llama, profile_data, tmp_path):
    out = tmp_path / "run.duckdb"
    crashed = _torchrun(_profile_cmd(tiny_llama, profile_data, out, batch=2), {"SFTMIX_TEST_STOP_RANK": "1:1"})
    assert crashed.returncode != 0
    parts = sorted(out.parent.glob("run.part-*-of-2.duckdb"))
    assert parts  # the shards' partial work is kept for the re-run
    resumed = _torchrun(_profile_cmd(tiny_llama, profile_data, out, batch=2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open_table(out) as t:
        n_ok = t.examples.filter(t.examples["status"] == "ok").height
        assert t.scores.height == 2 * n_ok and t.meta["stages"]["embed"] == "done"
