"""The overview histogram and the data map are readable on a real profile of the packaged model.

Criterion (issue 15): no histogram bar holds over 40% of the examples, and on each data-map axis, in that axis's
scale, the central 98% of points (1st to 99th percentile) spans at least a quarter of the plotted range. It is
measured on the figure objects that ``dashboard.figures`` returns for the pages, from their queries.

``python -m tests.dashboard.test_readable run.duckdb`` prints the same numbers for any table.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from dashboard import figures, queries
from dashboard.queries import Filter
from profiler.table import open_table

MAX_BAR_SHARE = 0.40
MIN_AXIS_SPREAD = 0.25


def largest_bar_share(fig: go.Figure) -> float:
    """The largest stacked bar's share of all the examples counted in a histogram figure."""
    per_bar: dict[float, float] = defaultdict(float)
    for trace in fig.data:
        for x, y in zip(trace.x, trace.y):
            per_bar[round(x, 12)] += y
    return max(per_bar.values()) / sum(per_bar.values())


def axis_spread(fig: go.Figure, axis: str) -> float:
    """(99th - 1st percentile of the points' ``axis`` values) / the length of the axis's range, as the figure
    sets it (or, without a set range, the data's min-max: plotly's autorange, before its padding)."""
    values = np.concatenate([np.asarray(getattr(t, axis), dtype=float) for t in fig.data])
    p1, p99 = np.percentile(values, [1, 99])
    rng = getattr(fig.layout, f"{axis}axis").range
    lo, hi = (values.min(), values.max()) if rng is None else rng
    return float((p99 - p1) / abs(hi - lo))


def page_figures(path: str | Path) -> tuple[go.Figure, go.Figure]:
    """The overview's histogram and the data map, built as the pages build them (whole table, no filter)."""
    with open_table(path) as t:
        con = t.cursor()
        marks = queries.scale_marks(con)
        hist = figures.confidence_histogram(
            queries.confidence_histogram(con, 60), marks["median_log_ppl"], marks["bin_edges"]
        )
        points, _ = queries.sample_points(con, Filter(), cap=200_000)
        dmap = figures.data_map(points, median=marks["median_log_ppl"], ambiguous_from=marks["ambiguous_from"])
    return hist, dmap


def readability(path: str | Path) -> dict[str, float]:
    hist, dmap = page_figures(path)
    return {
        "largest_bar_share": largest_bar_share(hist),
        "x_spread": axis_spread(dmap, "x"),
        "y_spread": axis_spread(dmap, "y"),
    }


def assert_readable(numbers: dict[str, float]) -> None:
    assert numbers["largest_bar_share"] <= MAX_BAR_SHARE, numbers
    assert numbers["x_spread"] >= MIN_AXIS_SPREAD, numbers
    assert numbers["y_spread"] >= MIN_AXIS_SPREAD, numbers


def test_the_measures_catch_an_unreadable_figure():
    """One bar with 98% of the examples, one cloud at the origin with a far outlier: both measures fail."""
    bars = go.Figure([go.Bar(x=[0.5, 1.5, 2.5], y=[98, 1, 1])])
    assert largest_bar_share(bars) == pytest.approx(0.98)
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.normal(0, 0.01, 200), [100.0]])
    dots = go.Figure([go.Scattergl(x=xs, y=xs)])
    dots.update_xaxes(range=[-1, 101])
    assert axis_spread(dots, "x") < 0.01 and axis_spread(dots, "y") < 0.01  # the autorange too


def test_readable_on_the_small_test_profile(small_profile):
    """The tiny random model's profile (fast); the real model's is the slow test below."""
    hist, dmap = page_figures(small_profile)
    assert sum(sum(t.y) for t in hist.data) == 30
    assert_readable(readability(small_profile))


@pytest.fixture(scope="module")
def packaged_model_profile(tmp_path_factory) -> Path:
    """A small real profile, as the demo builds it: the packaged SmolLM2, 60 examples, 2 checkpoints, LoRA."""
    from profiler.assets import smollm2_checkpoint, write_demo_data
    from profiler.config import FinetuneConfig, ScoreConfig
    from profiler.pipeline import run_profile

    work = tmp_path_factory.mktemp("real")
    specs = write_demo_data(work / "data", 30, 30, seed=0)
    score_cfg = ScoreConfig(
        model=str(smollm2_checkpoint()),
        data=specs,
        out=str(work / "run.duckdb"),
        max_length=256,
        truncate=True,
        on_error="skip",
        embed=False,
    )
    return Path(run_profile(score_cfg, FinetuneConfig(n_checkpoints=2, lora=True, seed=0)))


@pytest.mark.slow
def test_readable_on_a_profile_of_the_packaged_model(packaged_model_profile):
    numbers = readability(packaged_model_profile)
    print("packaged model profile:", {k: round(v, 3) for k, v in numbers.items()})
    assert_readable(numbers)
    with open_table(packaged_model_profile) as t:
        assert set(t.confidence["region"]) == set(queries.REGION_NAMES)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(p, {k: round(v, 3) for k, v in readability(p).items()})
