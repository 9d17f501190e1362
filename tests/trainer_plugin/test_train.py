"""SFTMixTrainer and `sftmix train`: training works, normalization is right, bad input stops before training."""

from __future__ import annotations

import random

import pytest
import torch

from profiler.cli import main
from profiler.config import ScoreConfig
from profiler.errors import ModelError
from profiler.pipeline import run_score
from tests.conftest import write_jsonl
from trainer_plugin import SFTMixTrainingArguments
from trainer_plugin.data import ProfileMismatch
from trainer_plugin.train import build_trainer

WORDS = ["permit", "building", "weeks", "hello", "machine", "blue", "sky", "one", "two", "three", "science"]


@pytest.fixture(scope="module")
def profile(tiny_llama, tmp_path_factory):
    d = tmp_path_factory.mktemp("train_profile")
    rng = random.Random(0)
    rows = [
        {
            "instruction": " ".join(rng.choices(WORDS, k=rng.randint(2, 6))),
            "output": " ".join(rng.choices(WORDS, k=rng.randint(3, 12))),
        }
        for _ in range(16)
    ]
    data = write_jsonl(d / "train.jsonl", rows)
    out = run_score(ScoreConfig(model=str(tiny_llama), data=[str(data)], out=str(d / "p.duckdb"), progress=False))
    return out, data


def config(model, profile, out, **kw):
    base = dict(
        num_train_epochs=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        warmup_steps=0.0,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
    )
    return SFTMixTrainingArguments(model=str(model), profile=str(profile), output_dir=str(out), **{**base, **kw})


def test_training_lowers_loss_and_changes_parameters(tiny_llama, profile, tmp_path):
    trainer = build_trainer(config(tiny_llama, profile[0], tmp_path / "out"))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert {"ntp_loss", "mixup_loss", "lam"} <= set(logs[0])
    assert logs[-1]["ntp_loss"] < logs[0]["ntp_loss"]
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_weak_to_strong_target_with_another_tokenizer(tiny_plain_llama, profile, tmp_path):
    # The profile was made with a ChatML tokenizer; this target has a different vocabulary and no template.
    trainer = build_trainer(config(tiny_plain_llama, profile[0], tmp_path / "w2s", num_train_epochs=1))
    row = trainer.train_dataset[0]
    assert max(row["input_ids"]) < trainer.model.config.vocab_size
    trainer.train()
    assert trainer.state.global_step == 4


def _first_step_grads(tiny_llama, profile, tmp_path, batch_size, grad_accum, name):
    from transformers import TrainerCallback

    grads = {}

    class Grab(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    trainer = build_trainer(
        config(
            tiny_llama,
            profile[0],
            tmp_path / name,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=grad_accum,
            num_train_epochs=1,
        ),
        callbacks=[Grab()],
    )
    trainer.args.max_steps = 1

    class FixedLam:
        def beta(self, a, b):
            return 0.3

    trainer._lam_rng = FixedLam()
    trainer.train()
    return grads, trainer.state.log_history[0]["loss"]


def test_gradient_accumulation_matches_one_big_batch(tiny_llama, profile, tmp_path):
    big, big_loss = _first_step_grads(tiny_llama, profile, tmp_path, 8, 1, "big")
    acc, acc_loss = _first_step_grads(tiny_llama, profile, tmp_path, 4, 2, "acc")
    assert acc_loss == pytest.approx(big_loss, rel=1e-5)
    assert set(acc) == set(big) and big
    for n in big:
        torch.testing.assert_close(acc[n], big[n], atol=1e-6, rtol=1e-4, msg=n)


def test_bad_input_stops_before_training(tiny_llama, profile, tmp_path, chat_file):
    with pytest.raises(ValueError, match="even"):
        config(tiny_llama, profile[0], tmp_path, per_device_train_batch_size=3)
    with pytest.raises(ValueError, match="even"):
        config(tiny_llama, profile[0], tmp_path, per_device_train_batch_size=0)
    with pytest.raises(ValueError, match=r"--mu -0.1: must be >= 0"):
        config(tiny_llama, profile[0], tmp_path, mu=-0.1)
    with pytest.raises(ValueError, match=r"--alpha 0: must be > 0"):
        config(tiny_llama, profile[0], tmp_path, alpha=0)
    with pytest.raises(ProfileMismatch, match="2 of 2 training examples are not in the profile"):
        build_trainer(config(tiny_llama, profile[0], tmp_path, data=[str(chat_file)]))
    with pytest.raises(ModelError, match="does not exist"):
        build_trainer(config(tmp_path / "nope", profile[0], tmp_path))
    # A table with examples but no split yet.
    from profiler.table import TableWriter

    TableWriter(tmp_path / "empty.duckdb").close()
    with pytest.raises(ProfileMismatch, match="no confidence split"):
        build_trainer(config(tiny_llama, tmp_path / "empty.duckdb", tmp_path))


def test_warmup_ratio_is_a_fraction_of_the_steps(tiny_llama, profile, tmp_path):
    # 16 examples, batch 4, 2 epochs: 8 steps; a 0.25 warm-up is 2 steps of rising learning rate.
    trainer = build_trainer(
        config(tiny_llama, profile[0], tmp_path / "w", warmup_steps=0.25, lr_scheduler_type="linear")
    )
    assert trainer.args.get_warmup_steps(8) == 2
    trainer.train()
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    # The rate each step used: 0, half, the peak after two warm-up steps, then the linear decay.
    assert lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert lrs[3] < lrs[2]
    with pytest.raises(ValueError, match=r"--warmup-steps -1: must be >= 0"):
        config(tiny_llama, profile[0], tmp_path, warmup_steps=-1)


def test_user_data_joined_by_content(tiny_llama, profile, tmp_path):
    trainer = build_trainer(config(tiny_llama, profile[0], tmp_path / "j", data=[str(profile[1])]))
    assert len(trainer.train_dataset) == 16


def test_cli_train_with_and_without_mixup(tiny_llama, profile, tmp_path, capsys):
    for flag, name in (("--mixup", "mix"), ("--no-mixup", "ntp")):
        rc = main(
            [
                "train",
                "--model",
                str(tiny_llama),
                "--profile",
                str(profile[0]),
                "--output_dir",
                str(tmp_path / name),
                "--num_train_epochs",
                "1",
                "--per_device_train_batch_size",
                "4",
                "--learning_rate",
                "1e-3",
                "--save_strategy",
                "no",
                "--use_cpu",
                flag,
            ]
        )
        assert rc == 0
        assert (tmp_path / name / "model.safetensors").is_file()
        assert (tmp_path / name / "sftmix_train_config.json").is_file()
    assert (
        main(
            [
                "train",
                "--model",
                str(tiny_llama),
                "--profile",
                str(profile[0]),
                "--output_dir",
                str(tmp_path / "x"),
                "--per_device_train_batch_size",
                "5",
            ]
        )
        == 2
    )
    assert "--per-device-train-batch-size 5: must be an even integer" in capsys.readouterr().err


def test_mixin_with_trl_sfttrainer(tiny_llama, profile, tmp_path):
    trl = pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer_plugin import SFTMixMixin
    from trainer_plugin.data import PairCollator, hold_out, load_training_set

    class SFTMixSFTTrainer(SFTMixMixin, trl.SFTTrainer):
        pass

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    rows, held = hold_out(load_training_set(profile[0], tok).dataset, 0.25, seed=0)
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        remove_unused_columns=False,
    )
    trainer = SFTMixSFTTrainer(
        model=model,
        args=args,
        train_dataset=rows,  # views of the memory-mapped rendered cache
        eval_dataset=held,
        data_collator=PairCollator(tok.pad_token_id),
        processing_class=tok,
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "mixup_loss" in h]
    assert len(logs) == 3 and all(h["ntp_loss"] > 0 for h in logs)
    metrics = trainer.evaluate()
    assert metrics["eval_ntp_loss_confident"] > 0 and metrics["eval_ntp_loss_unconfident"] > 0


def test_a_target_that_tokenizes_as_the_reference_takes_the_profile_render(
    tiny_llama, tiny_plain_llama, profile, tmp_path, monkeypatch
):
    """Where the target's tokenizer, template and max_length are the reference's, the training rows come from the
    profiler's own rendering (no map, no tokenizer call): the same rows, labels and counts as rendering again.
    Another tokenizer, another max_length, or a profile cache that is gone: rendered."""
    import json

    from transformers import AutoTokenizer

    from profiler.data import cache
    from trainer_plugin import data

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    real_map = data.map_arrow
    mapped = []
    monkeypatch.setattr(data, "map_arrow", lambda *a, **kw: mapped.append(1) or real_map(*a, **kw))
    reused = data.load_training_set(profile[0], tok, cache_dir=tmp_path / "a")
    manifest = json.loads((reused.path / cache.MANIFEST).read_text())
    assert mapped == [] and manifest["from_profile_render"]
    with monkeypatch.context() as m:  # the same target, rendered: what the profile's rows must equal
        m.setattr(data, "profile_render", lambda *a: None)
        rendered = data.load_training_set(profile[0], tok, cache_dir=tmp_path / "b")
    assert mapped == [1]
    assert reused.dataset.to_list() == rendered.dataset.to_list() and len(reused.dataset) > 0
    assert (reused.n_profile, reused.n_dropped, reused.n_truncated) == (
        rendered.n_profile,
        rendered.n_dropped,
        rendered.n_truncated,
    )
    assert reused.dataset.features == rendered.dataset.features
    # Not the same rendering: rendered for the target.
    for other, kw in ((AutoTokenizer.from_pretrained(tiny_plain_llama), {}), (tok, {"max_length": 64})):
        mapped.clear()
        data.load_training_set(profile[0], other, cache_dir=tmp_path / "c", **kw)
        assert mapped == [1]
    with monkeypatch.context() as m:  # the profile's cache removed (moved, cleaned up)
        m.setattr(data, "read_manifest", lambda *a: None)
        mapped.clear()
        data.load_training_set(profile[0], tok, cache_dir=tmp_path / "d")
        assert mapped == [1]


def test_training_data_is_rendered_once_into_a_cache(tiny_plain_llama, profile, tmp_path):
    """The target's rendering is a memory-mapped Arrow cache: the same rows as rendering each example, built by
    the first run and mapped (not rebuilt) by the next; another tokenizer or max_length is another cache."""
    import json

    import numpy as np
    from transformers import AutoTokenizer

    from profiler import open_table
    from profiler.data import Renderer
    from profiler.data.formats import Example
    from trainer_plugin.data import load_training_set

    tok = AutoTokenizer.from_pretrained(tiny_plain_llama)
    first = load_training_set(profile[0], tok, cache_dir=tmp_path / "c", max_length=64)
    files = sorted(first.path.glob("*.arrow"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = load_training_set(profile[0], tok, cache_dir=tmp_path / "c", max_length=64)
    assert again.path == first.path and [f.stat().st_mtime_ns for f in files] == stamps
    ds = again.dataset
    assert ds.features["input_ids"].feature.dtype == "int32" and len(ds) == again.n_profile - again.n_dropped
    with open_table(profile[0]) as t:
        want = {r[0]: (json.loads(r[1]), r[3]) for r in t.split_examples().iter_rows()}
    renderer = Renderer(tok, max_length=64, truncate=True)
    for row in ds:
        messages, split = want[row["example_id"]]
        rx = renderer.render(Example(messages))
        assert row["input_ids"] == rx.input_ids and row["labels"] == rx.labels()
        assert row["confident"] == (split == "confident")
    assert again.n_truncated == int(np.sum(ds["truncated"])) > 0  # max_length 64 cuts the longer ones
    longer = load_training_set(profile[0], tok, cache_dir=tmp_path / "c", max_length=128)
    assert longer.path != first.path
