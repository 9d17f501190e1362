"""Scoring at scale: `--shard i/N` part files, `sftmix merge`, and --workers on one node."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from profiler import open_table
from profiler.cli import main
from profiler.config import ScoreConfig, parse_shard
from profiler.errors import SftmixError, TableError
from profiler.pipeline import run_score
from profiler.pipeline.shards import find_parts, in_shard, merge_parts, part_path
from profiler.table.progress import Unfinished, unfinished


def cfg_for(model, data, out, **kw) -> ScoreConfig:
    return ScoreConfig(
        model=str(model), data=data, out=str(out), on_error="skip", progress=False, projection="pca", **kw
    )


def state(path):
    with open_table(path) as t:
        return (
            t.examples.select("example_id", "status").sort("example_id").rows(),
            t.scores.select("example_id", "checkpoint_id", "n_tokens").sort("example_id", "checkpoint_id").rows(),
            t.scores.sort("example_id", "checkpoint_id")["nll_sum"].to_list(),
            t.confidence.select("example_id", "split", "rank").rows(),
            t.embeddings.sort("example_id")["vector"].to_list(),
            t.token_scores().select("example_id", "checkpoint_id", "tokens").rows(),
            t.token_scores()["nll"].to_list(),
            t.ifd.select("example_id", "checkpoint_id", "model", "n_tokens").rows(),
            t.ifd["ifd"].to_list(),
        )


def assert_same(a, b):
    assert a[0] == b[0] and a[1] == b[1] and a[3] == b[3]
    assert a[2] == pytest.approx(b[2], rel=1e-5, abs=1e-5)
    for va, vb in zip(a[4], b[4]):
        assert va == pytest.approx(vb, rel=1e-4, abs=1e-5)
    # Token scores (with their texts) and IFD of every scored example, whichever shard scored it.
    assert a[5] == b[5] and len(a[5]) == len(a[0]) - 1 and a[7] == b[7] and len(a[7]) == len(a[5])
    for na, nb in zip(a[6], b[6]):
        assert na == pytest.approx(nb, abs=1e-5)
    assert a[8] == pytest.approx(b[8], rel=1e-5)


def test_parse_and_assign():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "a/b", "1"):
        with pytest.raises(ValueError, match="--shard .*: must be i/N"):
            parse_shard(bad)
    ids = [f"id{i}" for i in range(400)]
    owners = [[k for k in range(4) if in_shard(i, k, 4)] for i in ids]
    assert all(len(o) == 1 for o in owners)  # every example in exactly one shard
    assert min(sum(o == [k] for o in owners) for k in range(4)) > 60  # roughly balanced
    assert part_path("runs/run.duckdb", 2, 4) == Path("runs/run.part-2-of-4.duckdb")


def test_shards_merge_to_the_unsharded_table(tiny_llama, profile_data, tmp_path):
    whole = run_score(cfg_for(tiny_llama, profile_data, tmp_path / "whole.duckdb"))
    out = tmp_path / "run.duckdb"
    parts = [run_score(cfg_for(tiny_llama, profile_data, out, shard=f"{k}/3")) for k in range(3)]
    assert [Path(p) for p in parts] == find_parts(out)
    sizes = []
    for k, part in enumerate(parts):  # a part holds its slice's rows (of any status) and scores, no confidence
        with open_table(part) as t:
            ids = t.examples["example_id"].to_list()
            assert ids and all(in_shard(i, k, 3) for i in ids) and t.confidence.is_empty()
            assert set(t.scores["example_id"]) == set(t.examples.filter(pl.col("status") == "ok")["example_id"])
            sizes.append(len(ids))
    assert sum(sizes) == 31  # together, every row (the bad one included)
    with open_table(parts[0]) as t:  # every shard read the one rendered-data cache: rendered once
        cache = Path(t.meta["data_cache"])
    assert cache.parent == tmp_path / "run_data" and len([p for p in cache.parent.iterdir() if p.is_dir()]) == 1
    merged = merge_parts(out, projection="pca")
    assert_same(state(merged), state(whole))
    before = state(merged)
    assert main(["merge", str(out), "--projection", "pca"]) == 0  # merging again rebuilds the same table
    assert state(out) == before
    with open_table(out) as t:
        assert t.embeddings["umap_x"].null_count() == 0 and len(t.meta["merged_from"]) == 3
        # Finished, though its first part's stages end at scoring; a part's command line is not the table's.
        assert unfinished(t) is None and "command" not in t.meta
    with open_table(parts[0]) as t:  # `sftmix info` on a finished part says how to go on
        assert unfinished(t) == Unfinished(
            "merge", "a part file (shard 0 of 3) not merged yet", ["data", "score"], f"run `sftmix merge {out}`"
        )


def test_missing_unfinished_and_foreign_parts(tiny_llama, profile_data, tmp_path):
    out = tmp_path / "run.duckdb"
    run_score(cfg_for(tiny_llama, profile_data, out, shard="0/3"))
    run_score(cfg_for(tiny_llama, profile_data, out, shard="2/3"))
    with pytest.raises(TableError, match=r"missing shard\(s\) of 3: 1 \(run.part-1-of-3.duckdb\)"):
        merge_parts(out)
    # Shard 1 dies after one batch; merge names it; re-running it alone finishes the run.
    with pytest.raises(RuntimeError, match="stop_after_batches"):
        run_score(cfg_for(tiny_llama, profile_data, out, shard="1/3", max_tokens=64), stop_after_batches=1)
    with pytest.raises(TableError, match=r"shard\(s\) \[1\] of 3 did not finish"):
        merge_parts(out)
    with open_table(part_path(out, 1, 3)) as t:
        assert unfinished(t) == Unfinished(
            "score",
            "scoring has not completed (shard 1 of 3)",
            ["data"],
            "re-run its `sftmix score --shard` with the same --out",
        )
    run_score(cfg_for(tiny_llama, profile_data, out, shard="1/3", max_tokens=64))
    merge_parts(out, projection="none")
    # A part of another run (other max_length) is refused.
    other = run_score(cfg_for(tiny_llama, profile_data, tmp_path / "o.duckdb", shard="1/3", max_length=500))
    with pytest.raises(TableError, match="different runs"):
        merge_parts(tmp_path / "x.duckdb", [part_path(out, 0, 3), other, part_path(out, 2, 3)])
    assert not (tmp_path / "x.duckdb").exists()  # nothing half-written


def test_workers_on_one_node(tiny_llama, profile_data, tmp_path):
    whole = run_score(cfg_for(tiny_llama, profile_data, tmp_path / "whole.duckdb"))
    out = run_score(cfg_for(tiny_llama, profile_data, tmp_path / "run.duckdb", workers=2, device="cpu"))
    assert_same(state(out), state(whole))
    with pytest.raises(SftmixError, match="one worker per GPU"):
        run_score(replace(cfg_for(tiny_llama, profile_data, tmp_path / "g.duckdb", device="cpu"), workers=0))
    assert main(["profile", "--model", str(tiny_llama), "--data", profile_data[0], "--out", "x", "--shard", "0/2"]) == 2


def test_merge_replaces_only_an_sftmix_table(tmp_path):
    out = tmp_path / "run.duckdb"
    out.write_text("someone's file\n")
    with pytest.raises(TableError, match="run.duckdb is not a DuckDB file.*refusing to write into it"):
        merge_parts(out)
    assert out.read_text() == "someone's file\n" and sorted(p.name for p in tmp_path.iterdir()) == ["run.duckdb"]
