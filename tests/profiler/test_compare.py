"""`sftmix compare`: two profiles of the same data, correlation, split agreement, flips."""

from __future__ import annotations

import json

import polars as pl
import pytest
from scipy import stats

from profiler import open_table
from profiler.cli import main
from profiler.errors import TableError
from profiler.table.compare import compare_tables
from tests.conftest import N_CHAT, N_FAQ


def test_compare_against_a_direct_computation(small_profile, other_profile):
    cmp = compare_tables(small_profile, other_profile)
    with open_table(small_profile) as a, open_table(other_profile) as b:
        ca, cb = a.confidence, b.confidence
        assert a.meta["dataset_fingerprint"] == b.meta["dataset_fingerprint"]
    j = ca.join(cb, on="example_id", suffix="_b")
    assert cmp.n_common == j.height == N_FAQ + N_CHAT and cmp.same_data
    assert cmp.spearman == pytest.approx(stats.spearmanr(j["confidence"], j["confidence_b"]).statistic)
    assert cmp.kendall == pytest.approx(stats.kendalltau(j["confidence"], j["confidence_b"]).statistic)
    flipped = j.filter(pl.col("split") != pl.col("split_b"))
    assert cmp.flips.height == flipped.height and set(cmp.flips["example_id"]) == set(flipped["example_id"])
    m = cmp.agreement
    assert sum(sum(r.values()) for r in m.values()) == cmp.n_common
    assert m["confident"]["unconfident"] + m["unconfident"]["confident"] == cmp.flips.height
    assert cmp.agreement_rate == pytest.approx(1 - cmp.flips.height / cmp.n_common)
    changes = cmp.flips["rank_change"].to_list()
    assert changes == sorted(changes, reverse=True)


def test_a_profile_agrees_with_itself(small_profile):
    cmp = compare_tables(small_profile, small_profile)
    assert cmp.spearman == pytest.approx(1.0) and cmp.kendall == pytest.approx(1.0)
    assert cmp.agreement_rate == 1.0 and cmp.flips.is_empty()


def test_cli_text_json_and_flips_file(small_profile, other_profile, tmp_path, capsys):
    assert main(["compare", str(small_profile), str(other_profile)]) == 0
    text = capsys.readouterr().out
    assert "spearman" in text and "kendall tau-b" in text and f"common          {N_FAQ + N_CHAT}" in text
    out = tmp_path / "flips.jsonl"
    assert main(["compare", str(small_profile), str(other_profile), "--json", "--flips-out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["common"] == N_FAQ + N_CHAT and set(report["agreement"]) == {"confident", "unconfident"}
    assert len(out.read_text().splitlines()) == report["n_flips"]


def test_unrelated_or_unfinished_tables_are_refused(small_profile, tmp_path):
    from profiler.table.writer import TableWriter

    TableWriter(tmp_path / "empty.duckdb").close()
    with pytest.raises(TableError, match="no confidence yet"):
        compare_tables(small_profile, tmp_path / "empty.duckdb")
    from benchmarks.synthetic import write_synthetic_profile

    other = write_synthetic_profile(tmp_path / "syn.duckdb", 50, n_checkpoints=2)
    with pytest.raises(TableError, match="share 0 scored example"):
        compare_tables(small_profile, other)
    assert main(["compare", str(small_profile), str(tmp_path / "missing.duckdb")]) == 2
