"""Two CPU processes (gloo): `sftmix train` runs unchanged under torchrun (DDP), accelerate's FSDP (1 and 2)
and DeepSpeed (ZeRO-2 and ZeRO-3), and every sharded run gives the DDP run's losses, gradient norms and weights.

Sharding matters here because the SFTMix loss applies the LM head to hidden states outside the model's own
forward (in chunks, recomputed in backward): the head's weight must be gathered then, too."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.trainer_plugin.test_train import profile  # noqa: F401 - the module-scoped fixture


def _train_args(model, profile_path, out) -> list[str]:
    # 16 examples = 8 pairs; 2 pairs per device per step and 2 devices: 2 steps in the epoch.
    return [
        "-m",
        "profiler",
        "train",
        "--model",
        str(model),
        "--profile",
        str(profile_path),
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--save_strategy",
        "epoch",
        "--use_cpu",
        "--logging_steps",
        "1",
        "--warmup_steps",
        "0",
        # 4 held-out examples in batches of 3 per process: the second process's last batch repeats examples, which
        # must not count twice.
        "--eval_fraction",
        "0.25",
        "--per_device_eval_batch_size",
        "3",
    ]


def _run(cmd: list[str], out) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file()
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] == 2
    assert any("mixup_loss" in h for h in state["log_history"])
    state["eval"] = json.loads((out / "eval_results.json").read_text())
    return state


def _assert_same_run(out, state: dict, ddp_out, ddp_state: dict) -> None:
    """The same logged losses, lam and gradient norms per step, and the same trained weights, as DDP."""
    from safetensors.torch import load_file

    keys = ("loss", "ntp_loss", "mixup_loss", "lam", "grad_norm")
    logs = [h for h in state["log_history"] if "loss" in h]
    ddp_logs = [h for h in ddp_state["log_history"] if "loss" in h]
    assert len(logs) == len(ddp_logs)
    for got, want in zip(logs, ddp_logs):
        assert {k: got[k] for k in keys} == pytest.approx({k: want[k] for k in keys}, rel=1e-4)
    assert state["eval"]["eval_ntp_loss"] == pytest.approx(ddp_state["eval"]["eval_ntp_loss"], rel=1e-5)
    got, want = load_file(out / "model.safetensors"), load_file(ddp_out / "model.safetensors")
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)


def _accelerate(config_file, port: int) -> list[str]:
    """``accelerate launch`` with a config file, on its own port."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
        "--main_process_port",
        str(port),
    ]


@pytest.fixture(scope="module")
def ddp_run(tiny_llama, profile, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("ddp")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    return out, _run(launcher + _train_args(tiny_llama, profile[0], out), out)


@pytest.mark.slow
def test_torchrun_two_processes(ddp_run):
    _, state = ddp_run
    logs = [h for h in state["log_history"] if "loss" in h]
    assert len(logs) == 2 and all(h["mixup_loss"] > 0 for h in logs)


@pytest.mark.slow
def test_two_processes_evaluate_as_one(ddp_run, profile, tmp_path):  # noqa: F811
    """The eval losses logged by the 2-process run equal one process's evaluation of the same weights."""
    from tests.trainer_plugin.test_train import config
    from trainer_plugin.train import build_trainer

    out, state = ddp_run
    trainer = build_trainer(config(out, profile[0], tmp_path / "one", eval_fraction=0.25))
    one = trainer.evaluate()
    for key in ("eval_ntp_loss", "eval_ntp_loss_confident", "eval_ntp_loss_unconfident"):
        assert state["eval"][key] == pytest.approx(one[key], rel=1e-6), key
    assert json.loads((out / "heldout_ids.json").read_text())["example_ids"] == sorted(
        trainer.eval_dataset["example_id"]
    )


FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 2
machine_rank: 0
main_training_function: main
mixed_precision: 'no'
use_cpu: true
fsdp_config:
  fsdp_version: {version}
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer
  fsdp_reshard_after_forward: {reshard}
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_offload_params: false
  fsdp_cpu_ram_efficient_loading: false
  fsdp_sync_module_states: false
  fsdp_use_orig_params: true
"""


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, 2])
def test_accelerate_fsdp_two_processes(tiny_llama, profile, tmp_path, version, ddp_run):  # noqa: F811
    """FSDP shards the weights the chunked LM head reads outside the model's forward: same run as DDP."""
    out = tmp_path / f"fsdp{version}"
    cfg = tmp_path / "fsdp.yaml"
    reshard = "FULL_SHARD" if version == 1 else "true"
    cfg.write_text(FSDP_CONFIG.format(version=version, reshard=reshard))
    state = _run(_accelerate(cfg, 29540 + version) + _train_args(tiny_llama, profile[0], out), out)
    _assert_same_run(out, state, *ddp_run)


DEEPSPEED_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: true
deepspeed_config:
  zero_stage: {stage}
  gradient_accumulation_steps: 1
  gradient_clipping: 1.0
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: false
  zero3_save_16bit_model: true
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_accelerate_deepspeed_two_processes(tiny_llama, profile, tmp_path, stage, ddp_run):  # noqa: F811
    """ZeRO-3 partitions the LM head's weight too; the chunked head gathers it through the module call."""
    if importlib.util.find_spec("deepspeed") is None:
        if os.environ.get("SFTMIX_REQUIRE_DEEPSPEED") == "1":
            raise RuntimeError("SFTMIX_REQUIRE_DEEPSPEED=1 but deepspeed is not installed (make test installs it)")
        pytest.skip("deepspeed is not installed")
    out = tmp_path / f"zero{stage}"
    cfg = tmp_path / "ds.yaml"
    cfg.write_text(DEEPSPEED_CONFIG.format(stage=stage))
    state = _run(_accelerate(cfg, 29550 + stage) + _train_args(tiny_llama, profile[0], out), out)
    _assert_same_run(out, state, *ddp_run)
