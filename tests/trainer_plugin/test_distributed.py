"""Two CPU processes (gloo) through torchrun: `sftmix train` runs data-parallel, unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.trainer_plugin.test_train import profile  # noqa: F401 - the module-scoped fixture


@pytest.mark.slow
def test_torchrun_two_processes(tiny_llama, profile, tmp_path):  # noqa: F811
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "profiler",
        "train",
        "--model",
        str(tiny_llama),
        "--profile",
        str(profile[0]),
        "--output-dir",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--learning-rate",
        "1e-3",
        "--save-strategy",
        "epoch",
        "--device",
        "cpu",
        "--logging-steps",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file()
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    # 16 examples = 8 pairs; 2 pairs per device per step and 2 devices: 2 steps in the epoch.
    assert state["global_step"] == 2
    assert any("mixup_loss" in h for h in state["log_history"])
