"""Options: one declaration per option, checked before any work, one-line errors with exit code 2."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from profiler import config as C
from profiler.cli import COMMANDS, main
from profiler.options import LR_SCHEDULERS, OptionError, check_options

from ..conftest import write_jsonl
from ..signals import default_signals

SFTMIX = [sys.executable, "-m", "profiler"]


def _ours(cls) -> set[str]:
    """The fields sftmix declares (``transformers.TrainingArguments``' own fields are checked by that class)."""
    return {
        n
        for k in cls.__mro__
        if k.__module__.split(".")[0] != "transformers"
        for n in vars(k).get("__annotations__", {})
    }


def _numeric(cls) -> list[dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name not in _ours(cls):
            continue
        base = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
        if base[0] in (int, float):
            out.append(f)
    return out


def test_every_numeric_and_choice_option_declares_its_rule():
    """Each int/float option of every subcommand has a range (or a check) in its one declaration."""
    for name, cmd in COMMANDS.items():
        for cls in cmd.classes():
            for f in _numeric(cls):
                rule = f.metadata.get("sftmix_rule")
                assert rule is not None, f"{name}: {cls.__name__}.{f.name} has no rule"
                bounded = any(getattr(rule, k) is not None for k in ("ge", "gt", "le", "lt", "check", "choices"))
                assert bounded, f"{name}: {cls.__name__}.{f.name} declares no range"


def test_scheduler_choices_are_the_installed_transformers_ones():
    from transformers.trainer_utils import SchedulerType

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}


def test_export_split_choices_are_the_readers():
    from profiler.table.reader import EXPORT_SPLITS

    assert C.EXPORT_SPLITS == EXPORT_SPLITS


def test_record_format_choices_are_the_loader_formats():
    from profiler.data.formats import FORMATS

    assert set(C.RECORD_FORMATS) == {"auto", *FORMATS}


BAD = [
    (["profile", "--n-bins", "0"], "--n-bins 0: must be >= 1"),
    (["profile", "--n-bins", "-3"], "--n-bins -3: must be >= 1"),
    (["profile", "--projection-sample", "0"], "--projection-sample 0: must be >= 2"),
    (["score", "--max-batch-size", "0"], "--max-batch-size 0: must be >= 1"),
    (["profile", "--lora-r", "0"], "--lora-r 0: must be >= 1"),
    (["profile", "--learning-rate", "-1"], "--learning-rate -1.0: must be > 0"),
    (["profile", "--lr-scheduler", "bogus"], "invalid choice: 'bogus'"),
    (["profile", "--warmup-ratio", "1"], "--warmup-ratio 1.0: must be in [0, 1)"),
    (["score", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization 1.5: must be in (0, 1]"),
    (["score", "--device", "gpu"], "--device 'gpu': must be auto, cpu, mps, cuda or cuda:N"),
    (["score", "--shard", "4/4"], "--shard '4/4': must be i/N with 0 <= i < N"),
    (["score", "--workers", "-1"], "--workers -1: must be >= 0"),
    (["score", "--max-length", "1"], "--max-length 1: must be >= 2"),
    (["score", "--n-bin", "3"], "unrecognized arguments: --n-bin (did you mean --n-bins?)"),
    (["score", "--max-lenght", "3"], "did you mean --max-length?"),
    (["score", "--token-scores", "some"], "--token-scores/--token_scores: invalid choice: 'some'"),
    (["profile", "--ifd-model", "base", "--no-ifd"], "--ifd-model 'base': IFD is turned off (--no-ifd)"),
    (["score", "--ifd-model", " "], "--ifd-model ' ': must be a model directory or hub name"),
    (["profile", "--ifd-model", "./no-such-model"], "--ifd-model ./no-such-model: no such model directory"),
    (["score", "--ifd-model", "/no/such/model"], "--ifd-model /no/such/model: no such model directory"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_option_fails_at_once_in_one_line(extra, message, tiny_llama, alpaca_file, tmp_path, capsys):
    """A real model and data: the bad value is refused before the model loads, nothing is written."""
    out = tmp_path / "run.duckdb"
    argv = [extra[0], "--model", str(tiny_llama), "--data", str(alpaca_file), "--out", str(out), *extra[1:]]
    t = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - t < 5
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert lines[0].startswith(f"sftmix {extra[0]}: error: ")
    assert not out.exists() and not (tmp_path / "run_checkpoints").exists()


def test_bad_option_through_the_console_script(tiny_llama, alpaca_file, tmp_path):
    """The same as a user sees it: exit code 2, one line on stderr, no traceback, in well under 5 s."""
    argv = ["profile", "--model", str(tiny_llama), "--data", str(alpaca_file), "--out", str(tmp_path / "r.duckdb")]
    t = time.perf_counter()
    p = subprocess.run([*SFTMIX, *argv, "--n-bins", "0"], capture_output=True, text=True, timeout=60)
    assert time.perf_counter() - t < 5
    assert p.returncode == 2
    assert p.stderr.strip() == "sftmix profile: error: --n-bins 0: must be >= 1"
    assert not (tmp_path / "r.duckdb").exists()


def test_other_subcommands_check_their_options(tmp_path, capsys):
    cases = [
        (["export", "t.duckdb", "-o", "x.jsonl", "--split", "half"], "invalid choice: 'half'"),
        (["compare", "a.duckdb", "b.duckdb", "--flips", "-1"], "--flips -1: must be >= 0"),
        (["merge", "run.duckdb", "--n-bins", "0"], "--n-bins 0: must be >= 1"),
        (["dashboard", "t.duckdb", "--port", "70000"], "--port 70000: must be in [0, 65535]"),
        (["demo", "--n-faq", "-1"], "--n-faq -1: must be >= 0"),
        (["demo", "--n-checkpoints", "0"], "--n-checkpoints 0: must be >= 1"),
        (["train", "--model", "m", "--profile", "p", "--output-dir", "o", "--mu", "-1"], "--mu -1.0: must be >= 0"),
        (["train", "--model", "m", "--profile", "p", "--output-dir", "o", "--batch-size", "3"], "an even integer"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, lines)


def test_python_callers_get_the_same_rules():
    with pytest.raises(OptionError, match="--n-bins 0: must be >= 1"):
        C.ScoreConfig(model="m", data=["d"], out="o", n_bins=0)
    with pytest.raises(ValueError, match="--lora-r 0"):  # an OptionError is a ValueError too
        C.FinetuneConfig(lora_r=0)
    with pytest.raises(OptionError, match="--n-bins '3': must be an integer"):
        C.ScoreConfig(model="m", data=["d"], out="o", n_bins="3")
    cfg = C.ScoreConfig(model="m", data="d.jsonl", out="o", fields=["output=answer"])
    assert cfg.data == ["d.jsonl"] and cfg.fields == {"output": "answer"}
    check_options(cfg)


def test_config_file_flags_override_and_rules_apply(tmp_path, tiny_llama, alpaca_file, capsys):
    out = tmp_path / "run.duckdb"
    good = tmp_path / "good.yaml"
    good.write_text(f"model: {tiny_llama}\ndata: [{alpaca_file}]\nout: {out}\nn-bins: 4\nmax_length: 64\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {tiny_llama}\ndata: [{alpaca_file}]\nout: {out}\nn_bins: 0\n")
    assert main(["score", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == "sftmix score: error: --n-bins 0: must be >= 1"
    typo = tmp_path / "typo.yaml"
    typo.write_text("modle: x\n")
    assert main(["score", "--config", str(typo)]) == 2
    assert "unknown option 'modle' (did you mean model?)" in capsys.readouterr().err
    # A flag overrides the file; the file's other values stay.
    from profiler.options import build

    parser = __import__("profiler.cli", fromlist=["make_parser"]).make_parser("score")[1]["score"]
    parser.apply_config(str(good))
    ns = parser.parse_args(["--n-bins", "7", "--data", "other.jsonl"])
    (cfg,) = build([C.ScoreConfig], ns)
    assert (cfg.n_bins, cfg.max_length, cfg.data, cfg.model) == (7, 64, ["other.jsonl"], str(tiny_llama))


def test_flag_spellings(tmp_path):
    """Dashes or underscores, repeated or space-separated lists, --no-x for every boolean."""
    from profiler.options import build

    parser = __import__("profiler.cli", fromlist=["make_parser"]).make_parser("profile")[1]["profile"]
    ns = parser.parse_args(
        ["--model", "m", "--out", "o", "--data", "a", "b", "--data", "c", "--max_length", "9", "--no-embed", "--lora"]
        + ["--field", "output=answer", "--gradient-checkpointing", "--no-truncate", "--checkpoints-from", "ck"]
    )
    score, ft, extras = build([C.ScoreConfig, C.FinetuneConfig, C.ProfileExtras], ns)
    assert score.data == ["a", "b", "c"] and score.max_length == 9 and score.embed is False
    assert score.fields == {"output": "answer"} and score.truncate is False
    assert ft.lora is True and ft.gradient_checkpointing is True and extras.checkpoints_from == "ck"


def _write_rows(path: Path, n: int) -> Path:
    rows = [
        {"instruction": f"Question number {i}: what is {i} plus {i}?", "output": f"It is {2 * i}."} for i in range(n)
    ]
    return write_jsonl(path, rows)


def test_ctrl_c_during_scoring_exits_130_in_one_line_and_resumes(tiny_llama, tmp_path, capsys):
    from profiler.table import open_table

    data = _write_rows(tmp_path / "d.jsonl", 600)
    out = tmp_path / "run.duckdb"
    argv = [*SFTMIX, "score", "--model", str(tiny_llama), "--data", str(data), "--out", str(out)]
    argv += ["--max-batch-size", "1", "--no-embed", "--no-ifd"]  # IFD adds a pass that this test does not need
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_signals)
    seen = ""
    deadline = time.time() + 120
    while "scoring checkpoint" not in seen and time.time() < deadline:  # the progress bar is drawn
        seen += p.stderr.read(1)
    time.sleep(1.0)  # some batches written, far from all
    p.send_signal(signal.SIGINT)
    err = seen + p.stderr.read()
    assert p.wait(timeout=60) == 130
    assert "Traceback" not in err
    last = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert (
        last == f"sftmix score: interrupted; what was finished is saved in {out}: run the same command again to resume"
    )
    with open_table(out) as t:
        partial = t.scores.height
    assert 0 < partial < 600
    # `sftmix info` names the stage it stopped in and the command that resumes it (the one that was cut short).
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "splits          (none yet)" in info
    assert f"not finished    scoring has not completed ({partial} of 600 scores); stages done: data\n" in info
    assert f"to finish it    re-run `sftmix {shlex.join(argv[3:])}`\n" in info
    # The resume completes the table, equal to an uninterrupted run.
    assert subprocess.run(argv + ["--no-progress"], capture_output=True, timeout=300).returncode == 0
    ref = tmp_path / "ref.duckdb"
    ref_argv = [a if a != str(out) else str(ref) for a in argv]
    assert subprocess.run(ref_argv + ["--no-progress"], capture_output=True, timeout=300).returncode == 0
    with open_table(out) as a, open_table(ref) as b:
        assert a.scores.height == 600
        assert a.scores.sort("example_id")["nll_sum"].to_list() == pytest.approx(
            b.scores.sort("example_id")["nll_sum"].to_list(), rel=1e-6
        )
        assert a.confidence.sort("example_id")["split"].to_list() == b.confidence.sort("example_id")["split"].to_list()


def test_the_packaged_model_is_a_model_name(tiny_llama, alpaca_file, tmp_path, capsys, monkeypatch):
    """`--model smollm2-135m-instruct` (any case) is the demo's converted checkpoint, resolved in one place."""
    from profiler import assets
    from profiler.hf import resolve_model
    from profiler.table import open_table

    monkeypatch.setattr(assets, "smollm2_checkpoint", lambda: tiny_llama)  # the conversion, done once
    assert resolve_model("SmolLM2-135M-Instruct") == str(tiny_llama)
    assert resolve_model("org/model") == "org/model"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m-instruct").mkdir()  # a directory of that name is read instead
    assert resolve_model("smollm2-135m-instruct") == "smollm2-135m-instruct"
    (tmp_path / "smollm2-135m-instruct").rmdir()
    out = tmp_path / "run.duckdb"
    argv = ["score", "--model", "smollm2-135m-instruct", "--data", str(alpaca_file), "--out", str(out)]
    assert main([*argv, "--no-progress", "--no-embed"]) == 0
    assert f"reference model {tiny_llama}" in capsys.readouterr().out
    with open_table(out) as t:
        assert t.meta["score_config"]["model"] == str(tiny_llama)
        assert t.meta["command"]["argv"] == ["sftmix", *argv, "--no-progress", "--no-embed"]
