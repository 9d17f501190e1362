"""Confidence and the median split."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from profiler.confidence import compute_confidence


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
