"""The overview histogram, the data map and the dynamics page's bins are readable on a real profile of the packaged
model.

Criterion (issue 15): no histogram bar holds over 40% of the examples, and on each data-map axis, in that axis's
scale, the central 98% of points (1st to 99th percentile) spans at least a quarter of the plotted range. The lines
of neighbouring quantile bins on the dynamics page are at least 20 apart in colour (CIE76 Delta E; about the
difference between two distinct named colours, where one red-to-blue gradient put neighbours 6 to 16 apart). It is
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
MIN_COLOUR_GAP = 20.0


def lab(color: str) -> np.ndarray:
    """CIE L*a*b* (D65) of a plotly colour: ``#rrggbb`` or ``rgb(r,g,b)``."""
    if color.startswith("rgb"):
        rgb = np.array([float(v) for v in color[color.index("(") + 1 : -1].split(",")]) / 255
    else:
        rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))  # (all the colours here are far above the linear toe)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def colour_gaps(colors: list[str]) -> list[float]:
    """CIE76 Delta E between each colour and the next."""
    labs = [lab(c) for c in colors]
    return [float(np.linalg.norm(a - b)) for a, b in zip(labs, labs[1:])]


def neighbour_colour_gap(fig: go.Figure) -> float:
    """The smallest colour difference between the lines of neighbouring traces (in the legend's order)."""
    return min(colour_gaps([t.line.color for t in fig.data]), default=float("inf"))


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


def dynamics_figure(path: str | Path) -> go.Figure:
    """The dynamics page's lines per quantile bin."""
    with open_table(path) as t:
        return figures.decile_lines(queries.decile_trajectories(t.cursor()))


def readability(path: str | Path) -> dict[str, float]:
    hist, dmap = page_figures(path)
    return {
        "largest_bar_share": largest_bar_share(hist),
        "x_spread": axis_spread(dmap, "x"),
        "y_spread": axis_spread(dmap, "y"),
        "bin_colour_gap": neighbour_colour_gap(dynamics_figure(path)),
    }


def assert_readable(numbers: dict[str, float]) -> None:
    assert numbers["largest_bar_share"] <= MAX_BAR_SHARE, numbers
    assert numbers["x_spread"] >= MIN_AXIS_SPREAD, numbers
    assert numbers["y_spread"] >= MIN_AXIS_SPREAD, numbers
    assert numbers["bin_colour_gap"] >= MIN_COLOUR_GAP, numbers


def test_the_measures_catch_an_unreadable_figure():
    """One bar with 98% of the examples, one cloud at the origin with a far outlier: both measures fail."""
    bars = go.Figure([go.Bar(x=[0.5, 1.5, 2.5], y=[98, 1, 1])])
    assert largest_bar_share(bars) == pytest.approx(0.98)
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.normal(0, 0.01, 200), [100.0]])
    dots = go.Figure([go.Scattergl(x=xs, y=xs)])
    dots.update_xaxes(range=[-1, 101])
    assert axis_spread(dots, "x") < 0.01 and axis_spread(dots, "y") < 0.01  # the autorange too
    # Ten bins on one red-to-blue gradient (what the dynamics page drew): neighbours 6 to 16 apart.
    shades = [b / 9 for b in range(10)]
    gradient = [
        f"rgb({214 * (1 - t) + 31 * t:.0f},{39 * (1 - t) + 119 * t:.0f},{40 * (1 - t) + 180 * t:.0f})" for t in shades
    ]
    lines = go.Figure([go.Scatter(x=[0, 1], y=[i, i], line=dict(color=c)) for i, c in enumerate(gradient)])
    assert neighbour_colour_gap(lines) < 16


@pytest.mark.parametrize("n", [2, 3, 5, 10, 15, 20])
def test_ordered_colors_keep_neighbours_apart_from_red_to_blue(n):
    colors = figures.ordered_colors(n)
    assert len(set(colors)) == n
    assert min(colour_gaps(colors)) >= MIN_COLOUR_GAP
    first, last = lab(colors[0]), lab(colors[-1])
    assert first[1] > 20 and last[2] < -20  # a* > 0: red; b* < 0: blue


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
