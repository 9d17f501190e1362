"""`sftmix train` as a real training job: TrainingArguments flags do what they say, evaluation is exact, a killed
run resumes to the same weights, logs reach TensorBoard, and bad input stops before the model loads."""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from profiler import open_table
from profiler.cli import main
from tests.trainer_plugin.test_train import config, profile  # noqa: F401 - the module-scoped fixture
from trainer_plugin import train as train_mod
from trainer_plugin.train import HELDOUT_FILE, build_trainer, run_train


def _direct_nll(model, rows) -> tuple[float, int]:
    """Summed response NLL and token count of rows, from the model's own loss, one example at a time."""
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for r in rows:
            ids, labels = torch.tensor([r["input_ids"]]), torch.tensor([r["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            tokens += n
    return total, tokens


def test_eval_losses_equal_the_models_own_loss_per_split(tiny_llama, profile, tmp_path):  # noqa: F811
    args = config(tiny_llama, profile[0], tmp_path / "ev", eval_fraction=0.25, per_device_eval_batch_size=3)
    trainer = build_trainer(args)
    held = list(trainer.eval_dataset)
    # 8 confident and 8 unconfident: a quarter of each is held out, and never trained on.
    assert sum(r["confident"] for r in held) == 2 and len(held) == 4
    assert not {r["example_id"] for r in held} & set(trainer.train_dataset["example_id"])
    saved = json.loads((tmp_path / "ev" / HELDOUT_FILE).read_text())
    assert saved["example_ids"] == sorted(r["example_id"] for r in held)
    metrics = trainer.evaluate()
    for name, rows in (
        ("", held),
        ("_confident", [r for r in held if r["confident"]]),
        ("_unconfident", [r for r in held if not r["confident"]]),
    ):
        total, tokens = _direct_nll(trainer.model, rows)
        assert metrics[f"eval_ntp_loss{name}"] == pytest.approx(total / tokens, rel=1e-5)
    assert metrics["eval_loss"] == metrics["eval_ntp_loss"]
    # Another training seed holds out the same examples; another eval seed does not.
    other = build_trainer(config(tiny_llama, profile[0], tmp_path / "ev2", eval_fraction=0.25, seed=7))
    assert other.eval_dataset["example_id"] == [r["example_id"] for r in held]
    third = build_trainer(config(tiny_llama, profile[0], tmp_path / "ev3", eval_fraction=0.25, eval_seed=1))
    assert set(third.eval_dataset["example_id"]) != {r["example_id"] for r in held}


def test_eval_strategy_steps_evaluates_during_training(tiny_llama, profile, tmp_path):  # noqa: F811
    out = tmp_path / "steps"
    run_train(
        config(tiny_llama, profile[0], out, eval_fraction=0.25, eval_strategy="steps", eval_steps=2, num_train_epochs=1)
    )
    state = json.loads((out / "trainer_state.json").read_text())
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_ntp_loss", "eval_ntp_loss_confident", "eval_ntp_loss_unconfident"} <= set(results)
    # 12 training examples (4 held out), 2 pairs a step: 3 steps; evaluated at step 2, then after training.
    assert [h["step"] for h in state["log_history"] if "eval_ntp_loss" in h] == [2, 3]


class Stop(TrainerCallback):
    """Kills the run (as a crash would) right after the checkpoint of ``step`` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_killed_run_resumes_to_the_same_weights(tiny_llama, profile, tmp_path):  # noqa: F811
    # 16 examples, 2 pairs a step: 4 steps an epoch, 8 in all; the kill comes mid-way through the second epoch.
    kw = dict(save_strategy="steps", save_steps=1, lr_scheduler_type="cosine", warmup_steps=0.25)
    whole = build_trainer(config(tiny_llama, profile[0], tmp_path / "whole", **kw))
    whole.train()
    killed = build_trainer(config(tiny_llama, profile[0], tmp_path / "run", **kw), callbacks=[Stop(5)])
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = build_trainer(config(tiny_llama, profile[0], tmp_path / "run", resume_from_checkpoint="last", **kw))
    resumed.train(resume_from_checkpoint="last")
    assert resumed.state.global_step == 8
    lams = [h["lam"] for h in whole.state.log_history if "lam" in h]
    assert [h["lam"] for h in resumed.state.log_history if "lam" in h] == lams
    want = dict(whole.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        torch.testing.assert_close(p, want[name], atol=1e-6, rtol=0, msg=name)


def test_tensorboard_gets_the_sftmix_scalars(tiny_llama, profile, tmp_path):  # noqa: F811
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tbrun"
    args = config(
        tiny_llama,
        profile[0],
        out,
        report_to="tensorboard",
        num_train_epochs=1,
        eval_fraction=0.25,
        eval_strategy="epoch",
    )
    trainer = build_trainer(args)
    trainer.train()
    files = list((out / "runs").rglob("events.out.tfevents.*"))  # Trainer's default: OUTPUT_DIR/runs/DATE
    assert files
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/ntp_loss", "train/mixup_loss", "train/lam", "train/tokens_per_second_per_device"):
        assert tag in tags, tags
    assert "eval/ntp_loss_confident" in tags
    ntp = [e.value for e in acc.Scalars("train/ntp_loss")]
    logged = [h["ntp_loss"] for h in trainer.state.log_history if "ntp_loss" in h]
    assert ntp == pytest.approx(logged, rel=1e-6)
    assert all(e.value > 0 for e in acc.Scalars("train/tokens_per_second_per_device"))


def test_model_flags_change_the_model(tiny_llama, profile, tmp_path):  # noqa: F811
    trainer = build_trainer(
        config(tiny_llama, profile[0], tmp_path / "m", dtype="bfloat16", attn_implementation="eager")
    )
    assert {p.dtype for p in trainer.model.parameters()} == {torch.bfloat16}
    assert trainer.model.config._attn_implementation == "eager"
    trainer = build_trainer(config(tiny_llama, profile[0], tmp_path / "m32"))
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}


def _layer_calls_and_dtype(trainer) -> tuple[int, set]:
    """Runs one step; counts the forwards of the first layer's query projection and records its output dtype (the
    first op of the layer: checkpointing's recompute, which stops once backward has what it needs, always reruns it)."""
    calls, dtypes = [], set()

    def hook(module, inputs, output):
        calls.append(1)
        dtypes.add(output.dtype)

    trainer.model.model.layers[0].self_attn.q_proj.register_forward_hook(hook)
    trainer.train()
    return len(calls), dtypes


def test_bf16_and_gradient_checkpointing_do_what_they_say(tiny_llama, profile, tmp_path):  # noqa: F811
    one_step = dict(max_steps=1)
    plain = _layer_calls_and_dtype(build_trainer(config(tiny_llama, profile[0], tmp_path / "a", **one_step)))
    assert plain == (1, {torch.float32})
    # Gradient checkpointing recomputes the layer in backward; bf16 autocasts its matmuls, weights stay float32.
    gc = build_trainer(config(tiny_llama, profile[0], tmp_path / "b", gradient_checkpointing=True, **one_step))
    assert _layer_calls_and_dtype(gc)[0] == 2
    bf16 = build_trainer(config(tiny_llama, profile[0], tmp_path / "c", bf16=True, **one_step))
    assert _layer_calls_and_dtype(bf16)[1] == {torch.bfloat16}
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}


def test_max_steps_and_lora_from_the_command_line(tiny_llama, profile, tmp_path):  # noqa: F811
    out = tmp_path / "cli"
    argv = ["train", "--model_name_or_path", str(tiny_llama), "--profile", str(profile[0]), "--output_dir", str(out)]
    argv += ["--per_device_train_batch_size", "4", "--max_steps", "3", "--use_cpu", "--save_strategy", "no"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(argv + ["--lora", "--lora_r", "4", "--logging_steps", "1"]) == 0
    assert not [str(w.message) for w in seen if "is_gradient_checkpointing" in str(w.message)]  # peft's, silenced
    state = json.loads((out / "trainer_state.json").read_text())
    assert (out / "adapter_config.json").is_file() and json.loads((out / "adapter_config.json").read_text())["r"] == 4
    saved = json.loads((out / "sftmix_train_config.json").read_text())
    assert saved["max_steps"] == 3 and saved["learning_rate"] == 2e-6 and saved["mu"] == 0.2
    assert state["global_step"] == 3


def test_lora_starts_from_the_seed_not_from_what_ran_before(tiny_llama, profile, tmp_path):  # noqa: F811
    """The LoRA matrices are drawn before Trainer seeds anything: `--seed` must fix them, whatever consumed the global
    generator before (another run in the same process, as in a sweep or a study)."""

    def adapter(seed: int, noise: int) -> dict[str, torch.Tensor]:
        torch.rand(noise)  # earlier work in the same process
        args = config(tiny_llama, profile[0], tmp_path / f"l{seed}-{noise}", lora=True, lora_r=4, seed=seed)
        model = build_trainer(args).model
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    first, again, other = adapter(3, 10), adapter(3, 12345), adapter(4, 10)
    assert first and first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not any(torch.equal(first[n], other[n]) for n in first)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the target model is loaded: the error must come first."""

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(train_mod, "load_target", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


def _train(tiny_llama, profile_path, out, *extra) -> list[str]:
    return ["train", "--model", str(tiny_llama), "--profile", str(profile_path), "--output_dir", str(out), *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--per_device_train_batch_size", "3"], "--per-device-train-batch-size 3: must be an even integer >= 2"),
        (["--batch-size", "1"], "--per-device-train-batch-size 1: must be an even integer >= 2"),
        (["--eval_fraction", "0.6"], "--eval-fraction 0.6: must be in (0, 0.5]"),
        (["--eval_fraction", "0"], "--eval-fraction 0.0: must be in (0, 0.5]"),
        (["--eval_strategy", "steps"], "--eval_strategy steps: needs an eval set"),
        (["--report_to", "neptune"], "--report_to neptune: neptune is not installed"),
        (["--learning_rate", "-1"], "--learning-rate -1.0: must be > 0"),
        (["--lr_scheduler_type", "cosin"], "invalid choice: 'cosin'"),
        (["--max_step", "3"], "--max_step (did you mean --max_steps?)"),
    ],
)
def test_bad_options_stop_in_one_line(tiny_llama, profile, tmp_path, capsys, no_model_load, extra, message):  # noqa: F811
    assert main(_train(tiny_llama, profile[0], tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_bad_data_stops_before_the_model_loads(tiny_llama, profile, tmp_path, capsys, no_model_load):  # noqa: F811
    from tests.conftest import write_jsonl

    # An eval file holding only confident examples: no per-split loss for the other split.
    with open_table(profile[0]) as t:
        frame = t.split_examples()
    confident = [json.loads(r) for r, s in frame.select("record", "split").iter_rows() if s == "confident"]
    eval_file = write_jsonl(tmp_path / "eval.jsonl", confident[:2])
    assert main(_train(tiny_llama, profile[0], tmp_path / "e", "--eval_data", str(eval_file), "--use_cpu")) == 2
    assert "no unconfident examples" in capsys.readouterr().err
    # A profile of another schema version.
    import duckdb

    other = tmp_path / "v2.duckdb"
    import shutil

    shutil.copy(profile[0], other)
    with duckdb.connect(str(other)) as con:
        con.execute("UPDATE meta SET value = '\"2.0\"' WHERE key = 'schema_version'")
    assert main(_train(tiny_llama, other, tmp_path / "v", "--use_cpu")) == 2
    assert "schema version 2.0" in capsys.readouterr().err
    assert main(_train(tiny_llama, tmp_path / "missing.duckdb", tmp_path / "v", "--use_cpu")) == 2
    assert "--profile" in capsys.readouterr().err


def test_resume_from_a_run_of_other_settings_is_refused(tiny_llama, profile, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "r"
    argv = _train(tiny_llama, profile[0], out, "--per_device_train_batch_size", "4", "--max_steps", "1", "--use_cpu")
    assert main([*argv, "--save_strategy", "steps", "--save_steps", "1"]) == 0
    capsys.readouterr()
    assert main([*argv, "--mu", "0.5", "--resume_from_checkpoint", "last"]) == 2
    err = capsys.readouterr().err
    assert "written by a run of other settings (--mu 0.2 there, 0.5 now)" in err
    assert main([*argv, "--resume_from_checkpoint", str(tmp_path)]) == 2
    assert "not a Trainer checkpoint" in capsys.readouterr().err


def test_the_readme_trains_the_packaged_model_by_name(tiny_llama, profile, tmp_path, monkeypatch):  # noqa: F811
    """The README's `sftmix train --model smollm2-135m-instruct ...` line runs as written (another profile and
    output folder): the name is the packaged model's converted checkpoint, and only the adapter is saved."""
    from profiler import assets

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    line = next(ln for ln in readme.splitlines() if ln.startswith("sftmix train --model smollm2-135m-instruct"))
    argv = shlex.split(line)[1:]
    out = tmp_path / "demo_train"
    argv[argv.index("--profile") + 1], argv[argv.index("--output_dir") + 1] = str(profile[0]), str(out)
    monkeypatch.setattr(assets, "smollm2_checkpoint", lambda: tiny_llama)  # the conversion, done once
    assert main(argv) == 0
    assert json.loads((out / "sftmix_train_config.json").read_text())["model"] == str(tiny_llama)
    assert (out / "adapter_model.safetensors").is_file() and not list(out.glob("checkpoint-*"))
    assert not (out / "model.safetensors").exists()


def test_help_shows_the_sftmix_model_and_data_options_first(capsys):
    assert main(["train", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "usage: sftmix train --model MODEL --profile PROFILE --output_dir DIR [OPTIONS]"
    headings = [line for line in lines if line.endswith(":") and not line.startswith(" ")]
    assert headings == [
        "options:",
        "model and data:",
        "SFTMix:",
        "evaluation:",
        "training (the paper's defaults, and the TrainingArguments used most):",
        "other TrainingArguments (transformers):",
    ]

    def at(flag: str) -> int:
        return next(i for i, line in enumerate(lines) if line.lstrip().startswith(flag))

    assert at("--model") < at("--profile") < at("--mixup") < at("--eval-fraction") < at("--max_steps")
    assert at("--save-strategy") < lines.index("other TrainingArguments (transformers):") < at("--adam_beta1")
    assert not [line for line in lines if "(default: None)" in line]  # a required or unset option shows no default
