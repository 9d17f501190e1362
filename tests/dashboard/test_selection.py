"""A box or lasso on a map selects every example inside it, in SQL: the point-in-polygon predicate against
matplotlib's, the density layer against the filtered count, on a synthetic profile and on random points."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath

from benchmarks.synthetic import write_synthetic_profile
from dashboard import cache, figures, queries
from dashboard.queries import Filter, Shape
from profiler.table import open_table


def star(n: int, rng: np.random.Generator, center=(0.5, 0.5), inner=0.1, outer=0.45) -> tuple[np.ndarray, np.ndarray]:
    """A concave polygon of ``n`` vertices: radii between ``inner`` and ``outer`` at increasing random angles."""
    angles = np.sort(rng.random(n)) * 2 * np.pi
    radii = inner + (outer - inner) * rng.random(n)
    return center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)


def c_shape() -> tuple[np.ndarray, np.ndarray]:
    """A "C": concave, with edges that a ray from inside its gap crosses twice."""
    xs = [0.1, 0.9, 0.9, 0.3, 0.3, 0.9, 0.9, 0.1]
    ys = [0.1, 0.1, 0.3, 0.3, 0.7, 0.7, 0.9, 0.9]
    return np.array(xs), np.array(ys)


@pytest.fixture(scope="module")
def points_con():
    rng = np.random.default_rng(7)
    xy = rng.random((50_000, 2))
    con = duckdb.connect()
    con.execute("CREATE TABLE pts (row_index BIGINT, x DOUBLE, y DOUBLE)")
    con.executemany("INSERT INTO pts VALUES (?, ?, ?)", [(i, float(a), float(b)) for i, (a, b) in enumerate(xy)])
    return con, xy


def sql_inside(con, xs, ys) -> np.ndarray:
    sql, params = queries.polygon_sql("pts", "x", "y", tuple(map(float, xs)), tuple(map(float, ys)))
    rows = con.execute(f"SELECT row_index FROM pts WHERE {sql} ORDER BY 1", params).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


@pytest.mark.parametrize("n", [3, 7, 40, 400, 2500])
def test_polygon_predicate_matches_matplotlib_on_random_concave_polygons(points_con, n):
    con, xy = points_con
    rng = np.random.default_rng(n)
    for _ in range(3):
        xs, ys = star(n, rng)
        expected = np.flatnonzero(PolygonPath(np.column_stack([xs, ys])).contains_points(xy))
        assert np.array_equal(sql_inside(con, xs, ys), expected)


def test_polygon_predicate_on_a_c_shape_and_a_self_crossing_bow_tie(points_con):
    con, xy = points_con
    for xs, ys in (c_shape(), (np.array([0.1, 0.9, 0.1, 0.9]), np.array([0.1, 0.9, 0.9, 0.1]))):
        expected = np.flatnonzero(PolygonPath(np.column_stack([xs, ys])).contains_points(xy))
        assert expected.size > 1000
        assert np.array_equal(sql_inside(con, xs, ys), expected)
    # A degenerate lasso (all on one line) holds nothing.
    assert sql_inside(con, [0.1, 0.5, 0.9], [0.5, 0.5, 0.5]).size == 0


def test_shape_from_a_streamlit_selection():
    sel = {"box": [{"xref": "x", "yref": "y", "x": [0.2, 0.1], "y": [3, 4]}], "lasso": [], "points": []}
    shape = Shape.from_selection("semantic_map", sel)
    assert shape == Shape("semantic_map", (("box", (0.2, 0.1), (3.0, 4.0)),))
    assert shape.describe() == "box on the semantic map"
    lasso = Shape.from_selection("data_map", {"box": [], "lasso": [{"x": [0, 1, 1], "y": [0, 0, 1]}]})
    assert lasso.describe() == "lasso on the data map"
    assert Shape.from_selection("data_map", {"box": [], "lasso": []}) is None
    assert Shape.from_selection("data_map", None) is None


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_profile(tmp_path_factory.mktemp("selection") / "syn.duckdb", 20_000, ifd=True)


@pytest.mark.parametrize("cached", [False, True])
def test_selection_density_and_sample_on_a_profile(synthetic, cached):
    """With and without the table's cache: a lasso and a box select exactly the examples whose coordinates lie
    inside (numpy over the table read directly); the density counts every filtered example once; the sample's
    points are among them."""
    with open_table(synthetic) as t:
        if cached:
            cache.TableCache(t, persist=False).need("points")
        con = t.cursor()
        assert ("points" in queries.cached(con)) == cached
        coords = con.execute(
            "SELECT umap_x, umap_y, variability / -confidence, log10(-confidence) FROM confidence "
            "JOIN embeddings USING (example_id)"
        ).fetchnumpy()
        ux, uy, rv, lp = (np.asarray(v, dtype=float) for v in coords.values())
        rng = np.random.default_rng(1)
        xs, ys = star(60, rng, center=(0.0, 0.0), inner=3.0, outer=11.0)
        lasso = Shape("semantic_map", (("lasso", tuple(xs), tuple(ys)),))
        inside = PolygonPath(np.column_stack([xs, ys])).contains_points(np.column_stack([ux, uy]))
        assert 0 < inside.sum() < len(ux)
        assert queries.count(con, Filter(shape=lasso)) == int(inside.sum())
        # A box on the data map, combined with a split filter.
        x0, x1, y0, y1 = np.percentile(rv, 20), np.percentile(rv, 70), np.percentile(lp, 10), np.percentile(lp, 60)
        box = Shape("data_map", (("box", (x1, x0), (y0, y1)),))
        in_box = (rv >= x0) & (rv <= x1) & (lp >= y0) & (lp <= y1)
        assert queries.count(con, Filter(shape=box)) == int(in_box.sum())
        # The density holds every example of the filter; the sampled points lie inside the lasso.
        flt = Filter(shape=lasso)
        for step in queries.GRID_STEPS:
            cells = queries.density(con, flt, "semantic_map", step)
            assert cells["count"].sum() == inside.sum()
            assert cells["ix"].max() < queries.GRID // step
        pts, total = queries.sample_points(con, flt, cap=500, need_map=True)
        assert total == inside.sum() and pts.height == 500
        assert PolygonPath(np.column_stack([xs, ys])).contains_points(pts.select("umap_x", "umap_y").to_numpy()).all()
        # The figure: the density under the points, the selection's outline on top.
        extent = queries.map_extent(con, "semantic_map")
        layer = figures.density_layer(cells, extent, queries.GRID // queries.GRID_STEPS[-1])
        fig = figures.shape_outline(figures.semantic_map(pts, density=layer), lasso)
        assert [t.type for t in fig.data][0] == "heatmap" and fig.data[-1].name == "selection"
        assert np.nansum(np.asarray(fig.data[0].customdata, dtype=float)) == inside.sum()


def test_a_selection_on_the_compare_scatter_holds_every_common_example_inside(small_profile, other_profile):
    """The compare scatter's box or lasso, over the common examples' log10 mean perplexity in A and B, selects in SQL
    exactly the examples whose place is inside (against polars and matplotlib on the comparison's own frame), on
    table A's points and on example_view alike; the other pages then filter by it."""
    from profiler.table.compare import compare_tables

    joined = compare_tables(small_profile, other_profile).joined
    xy = np.column_stack([np.log10(-joined["confidence_a"].to_numpy()), np.log10(-joined["confidence_b"].to_numpy())])
    with open_table(small_profile) as t:
        cache.TableCache(t, persist=False).need("points")
        con = t.cursor()
        assert queries.store_compare_points(con, joined) == joined.height
        (x0, x1), (y0, y1) = np.quantile(xy[:, 0], [0.2, 0.8]), np.quantile(xy[:, 1], [0.1, 0.9])
        box = Shape("compare", (("box", (x1, x0), (y0, y1)),))  # corners in any order, as a drag gives them
        inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        # A triangle over the lower-left half, its corners off the data (no point on its edges but by chance).
        tri = (lo[0] - 1, hi[0] + 1, lo[0] - 1), (lo[1] - 1, lo[1] - 1, hi[1] + 1)
        lasso = Shape("compare", (("lasso", tri[0], tri[1]),))
        in_tri = PolygonPath(np.column_stack(tri)).contains_points(xy)
        ids = joined["example_id"].to_numpy()
        for shape, mask in ((box, inside), (lasso, in_tri)):
            assert 0 < mask.sum() < len(mask)
            flt = Filter(shape=shape)
            assert queries.count(con, flt) == mask.sum()
            where, params = flt.where()  # over example_view, as the export's query reads it
            got = {r[0] for r in con.execute(f"SELECT example_id FROM example_view WHERE {where}", params).fetchall()}
            assert got == set(ids[mask])
            page, total = queries.explore(con, flt, limit=500)
            assert total == mask.sum() and set(page["example_id"]) == set(ids[mask])
        assert box.describe() == "box on the compare scatter"
