"""`sftmix profile`: fine-tuning, checkpoints, resume after a crash, LoRA, and real training dynamics."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from profiler import open_table
from profiler.cli import main
from profiler.config import ScoreConfig
from profiler.errors import ModelError, SftmixError, TableError
from profiler.finetune import FinetuneConfig, checkpoint_steps
from profiler.pipeline import run_profile
from tests.conftest import build_tiny_model, write_jsonl

WORDS = ["permit", "building", "weeks", "hello", "machine", "blue", "sky", "one", "two", "three", "science"]


def dataset(tmp_path: Path, n: int = 16, repeat: int = 0, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [
        {"instruction": " ".join(rng.choices(WORDS, k=4)), "output": " ".join(rng.choices(WORDS, k=8))}
        for _ in range(n)
    ]
    rows += [{"instruction": "Recite the motto.", "output": "sky blue machine three permit hello"}] * repeat
    rng.shuffle(rows)
    return write_jsonl(tmp_path / "train.jsonl", rows)


def configs(model, data, out, **ft):
    score = ScoreConfig(model=str(model), data=[str(data)], out=str(out), progress=False)
    ft = {"n_checkpoints": 3, "batch_size": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0, **ft}
    return score, FinetuneConfig(**ft)


def table_state(path):
    with open_table(path) as t:
        return (
            t.scores.select("example_id", "checkpoint_id", "nll_sum").sort("example_id", "checkpoint_id").rows(),
            t.confidence.select("example_id", "split", "rank").rows(),
            t.checkpoints.select("step", "fraction").rows(),
            t.embeddings.select("example_id", "vector", "umap_x", "umap_y").rows(),
        )


def signals(path):
    """The token scores (with texts) and IFD: ids and counts exactly, values as floats."""
    with open_table(path) as t:
        tokens = t.token_scores()
        return (
            t.ifd.select("example_id", "checkpoint_id", "n_tokens").rows(),
            t.ifd["ifd"].to_list(),
            tokens.select("example_id", "checkpoint_id", "tokens").rows(),
            tokens["nll"].to_list(),
        )


def test_checkpoint_steps_are_even():
    assert checkpoint_steps(8, 3) == [3, 6, 8]
    assert checkpoint_steps(10, 5) == [2, 4, 6, 8, 10]
    with pytest.raises(SftmixError, match="only 2 optimizer steps"):
        checkpoint_steps(2, 3)


def test_full_profile(tiny_llama, tmp_path):
    data = dataset(tmp_path)
    out = run_profile(*configs(tiny_llama, data, tmp_path / "run.duckdb"))
    ckpts = sorted((tmp_path / "run_checkpoints").glob("checkpoint-*"))
    assert [p.name for p in ckpts] == ["checkpoint-3", "checkpoint-6", "checkpoint-8"]
    assert not list((tmp_path / "run_checkpoints").glob("*/optimizer.pt"))  # resume state removed when done
    with open_table(out) as t:
        assert t.checkpoints["step"].to_list() == [3, 6, 8]
        assert t.checkpoints["fraction"].to_list() == pytest.approx([3 / 8, 6 / 8, 1.0])
        assert t.scores.height == 3 * 16
        assert dict(t.confidence.group_by("split").len().iter_rows()) == {"confident": 8, "unconfident": 8}
        assert t.meta["stages"] == dict.fromkeys(["data", "finetune", "score", "confidence", "embed"], "done")
        # One embedding per scored example, from the last checkpoint's scoring pass, and its 2-D map.
        assert t.meta["embedding_checkpoint"] == 2
        assert sorted(t.embeddings["example_id"]) == sorted(t.confidence["example_id"])
        assert {len(v) for v in t.embeddings["vector"]} == {64}
        assert t.embeddings["umap_x"].null_count() == 0 and t.embeddings["umap_x"].n_unique() > 1
        assert t.meta["projection"]["method"] == "umap"
        assert t.meta["finetune_config"]["n_checkpoints"] == 3
    base = load_file(str(Path(tiny_llama) / "model.safetensors"))
    last = load_file(str(ckpts[-1] / "model.safetensors"))
    changed = [k for k in base if not torch.equal(base[k], last[k])]
    assert len(changed) > len(base) // 2  # the reference model really trained


def test_crash_after_second_checkpoint_resumes_to_the_same_table(tiny_llama, tmp_path, monkeypatch, capsys):
    data = dataset(tmp_path)
    ref = run_profile(*configs(tiny_llama, data, tmp_path / "ref.duckdb"))
    crashed = tmp_path / "crash.duckdb"
    with pytest.raises(RuntimeError, match="after checkpoint 2"):
        run_profile(*configs(tiny_llama, data, crashed), fail_after_checkpoints=2)
    saved = sorted(p.name for p in (tmp_path / "crash_checkpoints").glob("checkpoint-*"))
    assert saved == ["checkpoint-3", "checkpoint-6"]
    # Finished work is not redone: training resumes after step 6.
    import transformers

    seen = {}
    original = transformers.Trainer.train

    def spy(self, *a, **k):
        seen["resume"] = k.get("resume_from_checkpoint")
        return original(self, *a, **k)

    monkeypatch.setattr(transformers.Trainer, "train", spy)
    with open_table(crashed) as t:  # the cut-short segment counts, though the stage is not done
        assert "finetune" not in t.meta["stages"] and t.meta["stage_seconds"]["finetune"] > 0
        first_segment = t.meta["stage_seconds"]["finetune"]
    # A run from Python records no command line: `sftmix info` says which command to re-run.
    assert main(["info", str(crashed)]) == 0
    info = capsys.readouterr().out
    assert "not finished    fine-tuning has not completed; stages done: data\n" in info
    assert "to finish it    re-run `sftmix profile` with the same --out\n" in info
    run_profile(*configs(tiny_llama, data, crashed))
    assert seen["resume"].endswith("checkpoint-6")
    with open_table(crashed) as t:  # info shows the stage's time over both segments
        assert t.meta["stages"]["finetune"] == "done"
        assert t.meta["stage_seconds"]["finetune"] > first_segment
    a, b = table_state(crashed), table_state(ref)
    assert a[1:] == b[1:]
    for (ida, ca, na), (idb, cb, nb) in zip(a[0], b[0]):
        assert (ida, ca) == (idb, cb) and na == pytest.approx(nb, rel=1e-5, abs=1e-5)
    sa, sb = signals(crashed), signals(ref)  # IFD and token scores at the last checkpoint (id 2), for all 16
    assert sa[0] == sb[0] and sa[2] == sb[2] and {r[1] for r in sa[0] + sa[2]} == {2} and len(sa[2]) == 16
    assert sa[1] == pytest.approx(sb[1], rel=1e-5)
    for va, vb in zip(sa[3], sb[3]):
        assert va == pytest.approx(vb, abs=1e-5)
    # Other fine-tuning settings on the same table are refused before anything is written.
    with pytest.raises(TableError, match="other fine-tuning settings.*n_checkpoints"):
        run_profile(*configs(tiny_llama, data, crashed, n_checkpoints=4))
    # A finished run re-run does nothing but check.
    monkeypatch.setattr(transformers.Trainer, "train", lambda *a, **k: pytest.fail("no training on a finished run"))
    run_profile(*configs(tiny_llama, data, crashed))


def test_lora_profile_scores_adapters(tiny_llama, tmp_path):
    data = dataset(tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = run_profile(
            *configs(tiny_llama, data, tmp_path / "lora.duckdb", lora=True, lora_r=4, keep_checkpoints="last")
        )
    # Making the adapter (fine-tuning) and loading it (scoring) print no transformers deprecation.
    assert not [str(w.message) for w in seen if "is_gradient_checkpointing" in str(w.message)]
    dirs = sorted((tmp_path / "lora_checkpoints").glob("checkpoint-*"))
    assert [d.name for d in dirs] == ["checkpoint-8"]  # the others were deleted once scored
    assert (dirs[0] / "adapter_config.json").is_file() and not (dirs[0] / "model.safetensors").exists()
    with open_table(out) as t:
        assert t.checkpoints["kind"].to_list() == ["adapter"] * 3
        assert t.scores.height == 3 * 16
        per_ckpt = t.scores.group_by("checkpoint_id").agg(pl.col("mean_nll").mean()).sort("checkpoint_id")
        assert per_ckpt["mean_nll"][0] != per_ckpt["mean_nll"][2]  # the adapters differ
        # IFD and token scores come from the last adapter, scored before the others' weights were deleted.
        last = t.checkpoints["path"][2]
        assert t.ifd.height == 16 and set(t.ifd["checkpoint_id"]) == {2} and set(t.ifd["model"]) == {last}
        assert t.token_scores().height == 16 and set(t.token_scores()["checkpoint_id"]) == {2}


def test_confidence_of_a_repeated_example_rises(tiny_llama, tmp_path):
    data = dataset(tmp_path, n=16, repeat=8, seed=1)
    out = run_profile(*configs(tiny_llama, data, tmp_path / "dyn.duckdb", n_checkpoints=3, batch_size=4))
    with open_table(out) as t:
        motto = t.examples.filter(t.examples["prompt"] == "Recite the motto.")["example_id"].to_list()
        ppl = (
            t.scores.filter(t.scores["example_id"].is_in(motto))
            .group_by("checkpoint_id")
            .agg(pl.col("perplexity").mean())
            .sort("checkpoint_id")["perplexity"]
            .to_list()
        )
        assert ppl[0] > ppl[1] > ppl[2]
        conf = t.confidence.filter(t.confidence["example_id"].is_in(motto))
        assert set(conf["split"]) == {"confident"}


def test_checkpoints_from_and_foreign_checkpoints(tiny_llama, chat_tokenizer_dir, tmp_path, capsys):
    data = dataset(tmp_path)
    run_profile(*configs(tiny_llama, data, tmp_path / "a.duckdb"))
    rc = main(
        [
            "profile",
            "--model",
            str(tiny_llama),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "b.duckdb"),
            "--checkpoints-from",
            str(tmp_path / "a_checkpoints"),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert table_state(tmp_path / "b.duckdb") == table_state(tmp_path / "a.duckdb")
    other = build_tiny_model("qwen2", chat_tokenizer_dir, tmp_path / "other" / "checkpoint-1")
    with pytest.raises(ModelError, match="from another model.*model_type"):
        run_profile(*configs(tiny_llama, data, tmp_path / "c.duckdb"), checkpoints_from=str(other.parent))
    cfg = json.loads((Path(tiny_llama) / "config.json").read_text())
    assert cfg["model_type"] == "llama"


def test_not_enough_disk(tiny_llama, tmp_path, monkeypatch):
    import shutil

    from profiler import finetune as ft

    monkeypatch.setattr(ft.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    with pytest.raises(SftmixError, match="not enough disk"):
        run_profile(*configs(tiny_llama, dataset(tmp_path), tmp_path / "d.duckdb"))
    with open_table(tmp_path / "d.duckdb") as t:
        assert t.checkpoints.height == 0 and t.scores.height == 0


def test_a_rerun_says_what_was_done_before_and_redoes_nothing(tiny_llama, profile_data, tmp_path, capsys):
    out = tmp_path / "run.duckdb"
    args = ["profile", "--model", str(tiny_llama), "--data", *profile_data, "--out", str(out), "--on-error", "skip"]
    args += ["--n-checkpoints", "2", "--batch-size", "4", "--projection", "pca"]
    assert main(args) == 0
    with open_table(out) as t:
        first = t.embeddings.select("example_id", "umap_x").sort("example_id").rows()
        seconds = t.meta["stage_seconds"]
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    for line in ("fine-tuning: done before", "(done before: only what is missing)", "split: done before"):
        assert line in err, err
    assert "embeddings (pca): done before, nothing new scored" in err
    assert "read from the cache, rendered before" in err
    with open_table(out) as t:
        assert t.embeddings.select("example_id", "umap_x").sort("example_id").rows() == first
        assert t.meta["stage_seconds"]["embed"] >= seconds["embed"]
    assert main([*args, "--n-bins", "4"]) == 0  # another setting: that stage runs again
    assert "split: done before" not in capsys.readouterr().err
    with open_table(out) as t:
        assert t.confidence["quantile_bin"].max() == 3
