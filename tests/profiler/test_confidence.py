"""Confidence, the median split and the cartography regions (also in a table written before the region column)."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

from profiler.confidence import REGIONS, compute_confidence
from profiler.table import open_table
from profiler.table.schema import REGION_SQL, SCHEMA_VERSION
from profiler.table.writer import TableWriter


def scores_frame(ppl: dict[str, list[float]]) -> pl.DataFrame:
    rows = [(eid, c, float(np.log(p)), p) for eid, ps in ppl.items() for c, p in enumerate(ps)]
    return pl.DataFrame(rows, schema=["example_id", "checkpoint_id", "mean_nll", "perplexity"], orient="row")


@pytest.mark.parametrize("n", [1, 2, 7, 10, 101])
def test_split_is_balanced(n):
    rng = np.random.default_rng(n)
    conf = compute_confidence(scores_frame({f"e{i}": list(rng.uniform(1, 50, 3)) for i in range(n)}), [0, 1, 2])
    counts = dict(conf.group_by("split").len().iter_rows())
    assert counts.get("confident", 0) == n // 2
    assert counts.get("unconfident", 0) == n - n // 2
    assert conf["rank"].to_list() == list(range(n))
    # Every confident example is at least as confident as every unconfident one.
    if n > 1:
        assert (
            conf.filter(pl.col("split") == "confident")["confidence"].min()
            >= conf.filter(pl.col("split") == "unconfident")["confidence"].max()
        )


def test_values_and_ties():
    ppl = {"b": [2.0, 4.0], "a": [3.0, 3.0], "c": [10.0, 20.0], "d": [1.0, 1.0]}
    conf = compute_confidence(scores_frame(ppl), [0, 1], n_bins=4)
    row = {r["example_id"]: r for r in conf.iter_rows(named=True)}
    assert row["c"]["confidence"] == pytest.approx(-15.0)
    assert row["c"]["variability"] == pytest.approx(5.0)  # population std over checkpoints
    assert row["c"]["mean_nll"] == pytest.approx((np.log(10) + np.log(20)) / 2)
    # a and b tie at -3: the tie breaks by example_id, so the split is deterministic.
    assert conf["example_id"].to_list() == ["d", "a", "b", "c"]
    assert conf["split"].to_list() == ["confident", "confident", "unconfident", "unconfident"]
    assert conf["quantile_bin"].to_list() == [3, 2, 1, 0]


def test_examples_missing_a_checkpoint_are_left_out():
    frame = scores_frame({"a": [1.0, 2.0], "b": [3.0]})
    assert compute_confidence(frame, [0, 1])["example_id"].to_list() == ["a"]
    assert compute_confidence(frame, [0]).height == 2


def test_regions_partition_by_relative_variability_and_the_split():
    # Relative variability (std / mean of perplexity): a 0.5, b 0.5, c 0.1, d 0, e 0.2, f 0.
    ppl = {"a": [1.0, 3.0], "b": [50.0, 150.0], "c": [9.0, 11.0], "d": [4.0, 4.0], "e": [80.0, 120.0], "f": [30, 30]}
    conf = compute_confidence(scores_frame(ppl), [0, 1])
    region = dict(zip(conf["example_id"], conf["region"]))
    # The top third (6 // 3 = 2) by relative variability is ambiguous, whatever the perplexity; the others follow
    # the median split (confident: a, d, c; unconfident: f, b, e).
    assert region == {
        "a": "ambiguous",
        "b": "ambiguous",
        "c": "easy-to-learn",
        "d": "easy-to-learn",
        "e": "hard-to-learn",
        "f": "hard-to-learn",
    }
    assert set(conf["region"]) <= set(REGIONS)


@pytest.mark.parametrize("n", [1, 2, 3, 50])
def test_region_sql_matches_compute_confidence(n):
    """An older table has no region column: the read views compute it with REGION_SQL, to the same regions."""
    rng = np.random.default_rng(n)
    conf = compute_confidence(scores_frame({f"e{i}": list(rng.lognormal(3, 1, 3)) for i in range(n)}), [0, 1, 2])
    con = duckdb.connect()
    con.register("confidence", conf.drop("region"))
    sql = f"SELECT example_id, {REGION_SQL} AS region FROM confidence"
    assert dict(con.execute(sql).fetchall()) == dict(zip(conf["example_id"], conf["region"]))


def test_a_table_without_the_region_column_reads_with_regions_and_gets_it_on_write(tmp_path):
    path = tmp_path / "old.duckdb"
    rng = np.random.default_rng(0)
    conf = compute_confidence(scores_frame({f"e{i}": list(rng.lognormal(3, 1, 2)) for i in range(12)}), [0, 1])
    with TableWriter(path) as w:
        w.write_confidence(conf)
    con = duckdb.connect(str(path))  # as an earlier version wrote it
    con.execute("ALTER TABLE confidence DROP COLUMN region")
    con.close()
    expected = dict(zip(conf["example_id"], conf["region"]))
    with open_table(path) as t:
        assert dict(zip(t.confidence["example_id"], t.confidence["region"])) == expected
        assert dict(t.cursor().execute("SELECT example_id, region FROM confidence_view").fetchall()) == expected
    with TableWriter(path) as w:  # a writer (a resumed run) adds the column
        assert w.get_meta("schema_version") == SCHEMA_VERSION
    con = duckdb.connect(str(path), read_only=True)
    assert dict(con.execute("SELECT example_id, region FROM confidence").fetchall()) == expected
    con.close()
