"""The dashboard's queries and figures: pure functions over the read views, checked against the table read directly."""

from __future__ import annotations

import io
import json
import math

import duckdb
import polars as pl
import pytest

from dashboard import figures, queries
from dashboard.queries import Filter
from profiler import open_table
from tests.conftest import N_BAD, N_CHAT, N_FAQ


@pytest.fixture
def con(small_profile):
    """A cursor from the table's reader, as the dashboard gets one: read-only, with the read views."""
    with open_table(small_profile) as t:
        yield t.cursor()


def test_overview_counts(con, small_profile):
    ov = queries.overview(con)
    n_ok = N_FAQ + N_CHAT
    assert ov["examples"] == n_ok + N_BAD and ov["scored"] == n_ok
    assert (ov["confident"], ov["unconfident"]) == (n_ok // 2, n_ok - n_ok // 2)
    assert ov["checkpoints"] == 3 and ov["embedded"] == n_ok
    with open_table(small_profile) as t:
        assert ov["median_confidence"] == pytest.approx(t.confidence["confidence"].median())
    assert dict(queries.status_counts(con).iter_rows()) == {"ok": n_ok, "empty_field": N_BAD}
    src = {r["source"]: r for r in queries.source_breakdown(con).iter_rows(named=True)}
    assert src["faq"]["examples"] == N_FAQ + N_BAD and src["faq"]["scored"] == N_FAQ
    assert src["chat"]["confident"] + src["chat"]["unconfident"] == N_CHAT
    assert sum(r["confident"] for r in src.values()) == ov["confident"]


def test_histogram_bins_every_scored_example_once(con, small_profile):
    """Bins of log10 mean perplexity: every scored example once, the median split and quantile bins marked."""
    hist = queries.confidence_histogram(con, bins=7)
    assert hist["count"].sum() == N_FAQ + N_CHAT
    ov = queries.overview(con)
    assert hist["lo"].min() == pytest.approx(math.log10(-ov["max_confidence"]))
    assert hist["hi"].max() == pytest.approx(math.log10(-ov["min_confidence"]))
    by_split = hist.group_by("split").agg(pl.col("count").sum())
    assert dict(by_split.iter_rows()) == {"confident": 15, "unconfident": 15}
    marks = queries.scale_marks(con)
    assert marks["median_log_ppl"] == pytest.approx(ov["median_log_ppl"])
    assert len(marks["bin_edges"]) == 9 and marks["bin_edges"] == sorted(marks["bin_edges"])
    fig = figures.confidence_histogram(hist, marks["median_log_ppl"], marks["bin_edges"])
    assert {t.name for t in fig.data} == {"confident", "unconfident"}
    assert "log10 mean perplexity" in fig.layout.xaxis.title.text
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 10  # the quantile bins' edges and the median split
    # The median split is one line: every confident example is left of it, every unconfident one right of it.
    with open_table(small_profile) as t:
        c = t.confidence.with_columns(log_ppl=(-pl.col("confidence")).log10())
    assert c.filter(pl.col("split") == "confident")["log_ppl"].max() <= marks["median_log_ppl"]
    assert c.filter(pl.col("split") == "unconfident")["log_ppl"].min() >= marks["median_log_ppl"]


def test_regions_are_stored_filtered_and_marked(con, small_profile):
    ov = queries.overview(con)
    assert sum(ov["regions"].values()) == N_FAQ + N_CHAT
    assert ov["regions"]["ambiguous"] == (N_FAQ + N_CHAT) // 3
    for region, n in ov["regions"].items():
        assert queries.count(con, Filter(regions=(region,))) == n
    assert queries.count(con, Filter(regions=("easy-to-learn",), splits=("unconfident",))) == 0
    assert queries.count(con, Filter(regions=("hard-to-learn",), splits=("confident",))) == 0
    marks = queries.scale_marks(con)
    pts, _ = queries.sample_points(con, Filter(), cap=1000)
    amb = pts.filter(pl.col("region") == "ambiguous")["rel_variability"]
    rest = pts.filter(pl.col("region") != "ambiguous")["rel_variability"]
    assert rest.max() <= marks["ambiguous_from"] <= amb.min()
    fig = figures.data_map(pts, median=marks["median_log_ppl"], ambiguous_from=marks["ambiguous_from"])
    assert {t.name for t in fig.data} == set(queries.REGION_NAMES)
    assert sum(len(t.x) for t in fig.data) == N_FAQ + N_CHAT
    y0, y1 = fig.layout.yaxis.range
    assert y0 > y1  # reversed: confident (low perplexity) at the top
    assert "relative variability" in fig.layout.xaxis.title.text
    by_split = figures.data_map(pts, color="split")
    assert {t.name for t in by_split.data} == {"confident", "unconfident"}


def test_filters_and_sql_looking_search(con):
    everything = queries.count(con, Filter())
    assert everything == N_FAQ + N_CHAT + N_BAD
    assert queries.count(con, Filter(sources=("chat",))) == N_CHAT
    assert queries.count(con, Filter(splits=("unscored",))) == N_BAD
    assert queries.count(con, Filter(statuses=("empty_field",))) == N_BAD
    assert queries.count(con, Filter(splits=("confident",), sources=("faq", "chat"))) == 15
    # Text is a parameter: quotes, SQL and LIKE wildcards are matched literally.
    assert queries.count(con, Filter(search="'; DROP TABLE examples; --")) == 1
    assert queries.count(con, Filter(search="' OR 1=1 --")) == 0
    assert queries.count(con, Filter(search="%")) == 0
    assert queries.count(con, Filter(search="CHAT 3")) == 1  # case-insensitive
    assert queries.count(con, Filter()) == everything  # nothing was dropped
    conf = con.execute("SELECT confidence FROM confidence ORDER BY confidence").fetchall()
    mid = conf[len(conf) // 2][0]
    assert queries.count(con, Filter(conf_min=mid)) == len(conf) - len(conf) // 2
    ids = [r[0] for r in con.execute("SELECT example_id FROM confidence LIMIT 4").fetchall()]
    assert queries.count(con, Filter(ids=tuple(ids))) == 4
    assert queries.count(con, Filter(search=ids[0])) == 1  # an exact id


def test_sample_points_caps_and_is_seeded(con):
    pts, total = queries.sample_points(con, Filter(), cap=7)
    assert total == N_FAQ + N_CHAT and pts.height == 7
    again, _ = queries.sample_points(con, Filter(), cap=7)
    assert pts["example_id"].to_list() == again["example_id"].to_list()
    full, _ = queries.sample_points(con, Filter(sources=("chat",)), cap=1000, need_map=True)
    assert full.height == N_CHAT and full["umap_x"].null_count() == 0
    fig = figures.scatter(full, x="umap_x", y="umap_y", color="split")
    assert all(t.type == "scattergl" for t in fig.data)
    assert sum(len(t.x) for t in fig.data) == N_CHAT
    assert {t.customdata[0][0] for t in fig.data} <= set(full["example_id"])
    numeric = figures.scatter(full, x="variability", y="confidence", color="confidence")
    assert len(numeric.data) == 1 and numeric.data[0].marker.colorscale


def test_explore_sorts_and_pages(con):
    page1, total = queries.explore(con, Filter(), sort="confidence", descending=True, limit=10, offset=0)
    page2, _ = queries.explore(con, Filter(), sort="confidence", descending=True, limit=10, offset=10)
    assert total == N_FAQ + N_CHAT + N_BAD and page1.height == 10
    conf = page1["confidence"].to_list() + page2["confidence"].to_list()
    assert conf == sorted(conf, reverse=True)
    assert not set(page1["example_id"]) & set(page2["example_id"])
    with pytest.raises(ValueError, match="cannot sort"):
        queries.explore(con, Filter(), sort="confidence; DROP TABLE scores")
    detail = queries.example_detail(con, page1["example_id"][0])
    assert detail["split"] == "confident" and detail["scores"].height == 3
    assert detail["messages"][-1]["role"] == "assistant"
    assert queries.example_detail(con, "no such id") is None


def test_dynamics(con):
    dec = queries.decile_trajectories(con)
    assert dec.group_by("checkpoint_id").agg(pl.col("examples").sum())["examples"].to_list() == [30, 30, 30]
    ids = [r[0] for r in con.execute("SELECT example_id FROM confidence LIMIT 3").fetchall()]
    traj = queries.trajectories(con, ids)
    assert traj.height == 9 and traj["fraction"].max() == pytest.approx(1.0)
    assert len(figures.trajectory_lines(traj).data) == 3
    assert len(figures.decile_lines(dec).data) == dec["quantile_bin"].n_unique()


def test_export_file_matches_the_filter(con):
    data, n = queries.export_file(con, Filter(sources=("chat",)), "confident", "jsonl")
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert n == len(records) > 0
    assert {r["source"] for r in records} == {"chat"} and {r["split"] for r in records} == {"confident"}
    assert all("messages" in r for r in records)  # the original fields
    data, n2 = queries.export_file(con, Filter(sources=("chat",)), "unconfident", "parquet")
    frame = pl.read_parquet(io.BytesIO(data))
    assert frame.height == n2 == N_CHAT - n and set(frame["split"]) == {"unconfident"}
    with pytest.raises(ValueError):
        queries.export_file(con, Filter(), "all", "jsonl")


def test_connection_is_read_only(small_profile):
    c = duckdb.connect(str(small_profile), read_only=True)
    with pytest.raises(duckdb.Error):
        c.execute("DELETE FROM examples")
    c.close()


def test_selection_maps_back_to_example_ids(con):
    pts, _ = queries.sample_points(con, Filter(), cap=100, need_map=True)
    fig = figures.scatter(pts, x="umap_x", y="umap_y", color="split")
    trace = fig.data[1]
    expected = [trace.customdata[0][0], trace.customdata[2][0]]
    # Streamlit's selection points carry customdata; without it, the trace and index locate the point.
    with_custom = [{"curve_number": 1, "point_index": i, "customdata": trace.customdata[i]} for i in (0, 2)]
    without = [{"curve_number": 1, "point_index": i} for i in (0, 2)]
    assert figures.selected_ids(fig, with_custom) == figures.selected_ids(fig, without) == expected
    assert queries.count(con, Filter(ids=tuple(expected))) == 2


def test_queries_use_only_the_read_views(small_profile):
    """Every query runs on a cursor that sees the views alone: the base tables are not needed by name."""
    from profiler.table import VIEWS

    with open_table(small_profile) as t:
        for c in (t.con, t.cursor()):
            views = {r[0] for r in c.execute("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}
            assert set(VIEWS) <= views
            with pytest.raises(duckdb.Error):  # the reader's connections are read-only
                c.execute("DELETE FROM examples")
        view = t.frame("SELECT * FROM example_view")
        assert view.height == t.examples.height and view["example_id"].n_unique() == view.height
        assert view.filter(view["split"] == "unscored").height == t.examples.height - t.confidence.height
        assert t.frame("SELECT * FROM score_view").height == t.scores.height
    # The file itself holds no views: they are the reader's, made on each connection.
    raw = duckdb.connect(str(small_profile), read_only=True)
    assert raw.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()[0] == 0
    raw.close()
