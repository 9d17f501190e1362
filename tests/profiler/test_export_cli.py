"""Export round trips and the CLI end to end on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest

from profiler import open_table
from profiler.cli import main
from profiler.config import ScoreConfig
from profiler.data import load_examples
from profiler.export import export_split
from profiler.pipeline import run_score
from tests.conftest import ALPACA_ROWS, write_jsonl


@pytest.fixture
def table(tiny_llama, alpaca_file, chat_file, tmp_path):
    cfg = ScoreConfig(
        model=str(tiny_llama), data=[str(alpaca_file), str(chat_file)], out=str(tmp_path / "r.duckdb"), progress=False
    )
    return run_score(cfg)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_export_round_trip(table, tmp_path, fmt):
    with open_table(table) as t:
        conf = {r["example_id"]: r for r in t.confidence.iter_rows(named=True)}
    total = 0
    for split in ("confident", "unconfident"):
        out = tmp_path / f"{split}.{fmt}"
        n = export_split(table, out, split=split, fmt=fmt)
        total += n
        if fmt == "hf":
            from datasets import load_from_disk

            frame = load_from_disk(str(out)).to_polars()
        else:
            frame = pl.read_ndjson(out) if fmt == "jsonl" else pl.read_parquet(out)
        assert frame.height == n
        assert set(frame["split"]) == {split}
        for r in frame.iter_rows(named=True):
            assert r["confidence"] == pytest.approx(conf[r["example_id"]]["confidence"])
        # The exported file is valid input again, and its examples keep their ids.
        reloaded = load_examples([str(out)])
        assert [x.example_id for x in reloaded] == frame["example_id"].to_list()
    assert total == len(conf)
    assert export_split(table, tmp_path / "all.jsonl", split="all") == len(conf)


def test_export_keeps_original_fields_and_renames_clashes(tiny_llama, tmp_path):
    rows = [dict(r, split="orig", id=i) for i, r in enumerate(ALPACA_ROWS)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = run_score(
        ScoreConfig(model=str(tiny_llama), data=[str(data)], out=str(tmp_path / "r.duckdb"), progress=False)
    )
    export_split(out, tmp_path / "x.jsonl")
    recs = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert {r["split"] for r in recs} == {"orig"}
    assert {r["sftmix_split"] for r in recs} == {"confident", "unconfident"}
    assert sorted(r["id"] for r in recs) == list(range(len(rows)))


def test_cli_score_info_export(tiny_llama, alpaca_file, chat_file, tmp_path, capsys):
    out = tmp_path / "cli.duckdb"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"max_tokens: 128\nn_bins: 5\ndata:\n  - {alpaca_file}\n")
    rc = main(
        [
            "score",
            "--model",
            str(tiny_llama),
            "--data",
            f"talk={chat_file}",
            "--out",
            str(out),
            "--config",
            str(cfg),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "examples        2" in printed  # flags override the config's data
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sources"] == {"talk": 2} and info["splits"] == {"confident": 1, "unconfident": 1}
    assert info["unfinished"] is None
    # The summary is on the dashboard's scale: the mean perplexity over checkpoints, with the split's median.
    with open_table(out) as t:
        ppl = -t.confidence["confidence"]
    assert info["perplexity"]["median"] == pytest.approx(ppl.median())
    assert main(["info", str(out)]) == 0
    line = f"mean perplexity median split at {ppl.median():.4g} (from {ppl.min():.4g} to {ppl.max():.4g})"
    assert line in capsys.readouterr().out.splitlines()
    assert (
        main(["export", str(out), "--split", "confident", "-o", str(tmp_path / "c.parquet"), "--format", "parquet"])
        == 0
    )
    assert pl.read_parquet(tmp_path / "c.parquet").height == 1


def test_cli_errors_are_one_line(tmp_path, tiny_llama, alpaca_file, capsys):
    rc = main(
        ["score", "--model", str(tmp_path / "nope"), "--data", str(alpaca_file), "--out", str(tmp_path / "x.duckdb")]
    )
    assert rc == 2
    assert "model path does not exist" in capsys.readouterr().err
    assert main(["score", "--data", str(alpaca_file)]) == 2
    assert "the following arguments are required: --model, --out" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [ALPACA_ROWS[0], {"instruction": "Q", "output": 5}])
    assert main(["score", "--model", str(tiny_llama), "--data", str(bad), "--out", str(tmp_path / "y.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl, row 1 (line 2), field 'output': expected a string, got int" in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "profiler", "info", str(tmp_path / "none.duckdb")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "no confidence table at" in proc.stderr
