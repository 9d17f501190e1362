"""What the pages share: the open tables, cached queries, and the global filter (sidebar).

The launcher passes the table paths in the environment (``SFTMIX_TABLE``, ``SFTMIX_COMPARE``), which also works
under ``streamlit.testing``. Each table is opened once, read-only, by the table's reader (cached as a resource for
the server's life, and opened again when the file changes); each query runs on its own cursor from it (thread-safe),
which carries the read views and sees the table's cache (:mod:`dashboard.cache`). Cached query results are keyed by
the table's content key, so a table written again is read again.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import replace

import duckdb
import polars as pl
import streamlit as st

from dashboard import COMPARE_ENV, TABLE_ENV, figures, queries
from dashboard.cache import TableCache
from dashboard.queries import Filter, Shape
from dashboard.token_index import TokenIndex
from profiler.errors import TableError
from profiler.table import ConfidenceTable, open_table

# Points drawn on top of a map's density (which holds every example) by default, and at most: for hover and click.
# A point sends about 300 bytes to the browser, so the most stays well under 20 MB.
POINT_CAP = 5_000
POINT_CAP_MAX = 50_000


def table_path() -> str:
    path = os.environ.get(TABLE_ENV)
    if not path:
        st.error(f"No table given: start the dashboard with `sftmix dashboard run.duckdb` (or set {TABLE_ENV}).")
        st.stop()
    return path


def compare_path() -> str | None:
    return os.environ.get(COMPARE_ENV) or None


def _stat(path: str) -> tuple[int, int, int]:
    s = os.stat(path)
    return s.st_size, s.st_mtime_ns, s.st_ino


@st.cache_resource(show_spinner=False, max_entries=4)
def _opened(path: str, stat: tuple[int, int, int]) -> tuple[ConfidenceTable, TableCache]:
    """The reader of ``path`` and its cache, opened once per state of the file (the reader checks that this is an
    sftmix table of a readable version)."""
    t = open_table(path)
    return t, TableCache(t)


def table(path: str) -> ConfidenceTable:
    return _opened(path, _stat(path))[0]


def table_cache(path: str) -> TableCache:
    return _opened(path, _stat(path))[1]


def cursor(path: str | None = None, *parts: str) -> duckdb.DuckDBPyConnection:
    """A fresh read-only cursor over the table, with the read views the queries use and the cached ``parts``
    (:data:`dashboard.queries.CACHED`) built or loaded first."""
    path = path or table_path()
    table_cache(path).need(*(parts or ("points",)))
    return table(path).cursor()


def _by_content(max_entries: int | None = None):
    """``st.cache_data`` keyed by the table's content key too (``fn(path, ...)``), so a table written again is read
    again."""

    def wrap(fn):
        def keyed(path: str, key: str, *args):
            return fn(path, *args)

        # Streamlit tells cached functions apart by their name and source: each gets its function's name.
        keyed.__name__, keyed.__qualname__ = fn.__name__, fn.__qualname__
        cached = st.cache_data(show_spinner=False, max_entries=max_entries)(keyed)

        @functools.wraps(fn)
        def call(path: str, *args):
            return cached(path, table_cache(path).key, *args)

        return call

    return wrap


# --- cached queries (keyed by the table path, its content and the arguments) -----------------------------------
def _summary(path: str, name: str, query, *args):
    """A whole-table query's result, kept beside the table by its cache (:meth:`TableCache.summary`)."""
    return table_cache(path).summary(name, lambda: query(cursor(path), *args))


@_by_content()
def overview(path: str) -> dict:
    return _summary(path, "overview", queries.overview)


@_by_content()
def progress(path: str) -> dict:
    """Where the run that wrote the table stands (:func:`dashboard.queries.run_progress`), from its meta."""
    return queries.run_progress(queries.meta(table(path).cursor()))


@_by_content()
def status_counts(path: str) -> pl.DataFrame:
    return _summary(path, "status_counts", queries.status_counts)


@_by_content()
def histogram(path: str, bins: int) -> pl.DataFrame:
    return _summary(path, f"histogram_{int(bins)}", queries.confidence_histogram, bins)


@_by_content()
def scale_marks(path: str) -> dict:
    return _summary(path, "scale_marks", queries.scale_marks)


@_by_content()
def source_breakdown(path: str) -> pl.DataFrame:
    return _summary(path, "source_breakdown", queries.source_breakdown)


@_by_content()
def distinct_values(path: str, column: str) -> list[str]:
    return _summary(path, f"distinct_{column}", queries.distinct_values, column)


@_by_content(64)
def count(path: str, flt: Filter) -> int:
    return queries.count(cursor(path), flt)


@_by_content(64)
def split_counts(path: str, flt: Filter) -> dict[str, int]:
    return queries.split_counts(cursor(path), flt)


def _unfiltered(flt: Filter) -> bool:
    """Whether ``flt`` keeps every example: what a page shows on a first visit, kept beside the table."""
    return flt == Filter()


@_by_content(32)
def sample_points(path: str, flt: Filter, cap: int, need_map: bool) -> tuple[pl.DataFrame, int]:
    """The seeded sample of points a map (or the dynamics) draws and the number matching; for the whole table and
    at most :data:`POINT_CAP` points, kept beside the table (the next server reads it)."""
    computed = functools.cache(lambda: queries.sample_points(cursor(path), flt, cap=cap, need_map=need_map))
    if not _unfiltered(flt) or cap > POINT_CAP:
        return computed()
    kept, name = table_cache(path), f"sample_{cap}_{'map' if need_map else 'all'}"
    return kept.summary(name, lambda: computed()[0]), kept.summary(f"{name}_n", lambda: {"n": computed()[1]})["n"]


@_by_content()
def map_extent(path: str, space: str) -> tuple[float, float, float, float] | None:
    extent = table_cache(path).summary(f"extent_{space}", lambda: {"extent": queries.map_extent(cursor(path), space)})
    return None if extent["extent"] is None else tuple(extent["extent"])


@_by_content(32)
def density(path: str, flt: Filter, space: str, step: int) -> pl.DataFrame:
    """A map's cells (:func:`dashboard.queries.density`); the whole table's, at each resolution, kept beside it."""
    if not _unfiltered(flt):
        return queries.density(cursor(path), flt, space, step)
    return table_cache(path).summary(f"density_{space}_{step}", lambda: queries.density(cursor(path), flt, space, step))


def density_step(total: int) -> int:
    """Cells merged per axis (:data:`dashboard.queries.GRID_STEPS`) for a map of ``total`` examples: 64 cells per
    axis up to 20k examples, 128 above (256 would send four times the cells and cost the browser more than the
    detail is worth on a page-wide chart)."""
    return 4 if total <= 20_000 else 2


def map_figure_parts(path: str, flt: Filter, space: str, total: int, color: str, shade: str):
    """What a map draws under its points: its extent over the whole table, the density layer of the filtered
    examples (coloured by ``count`` or, for "as the points", by ``color``) and the cells per axis."""
    extent = map_extent(path, space)
    step = density_step(total)
    per_axis = queries.GRID // step
    if extent is None:
        return None, None, per_axis
    cells = density(path, flt, space, step)
    sources = distinct_values(path, "source")
    layer = figures.density_layer(
        cells, extent, per_axis, color="count" if shade == "count" else color, sources=sources
    )
    return extent, layer, per_axis


def map_caption(total: int, drawn: int, cap: int, per_axis: int, what: str) -> str:
    """The caption under a map's controls: how many examples are in the density and how many drawn as points."""
    sample = f" (a random sample: cap {cap:,})" if total > drawn else ""
    return (
        f"Density: all {total:,} {what} matching the filter, counted in {per_axis}×{per_axis} cells · points: "
        f"{drawn:,} drawn on top{sample}, for hover. A box or lasso selects every example inside it, not only the "
        "points."
    )


def selection_note(path: str, flt: Filter, space: str) -> None:
    """Under a map: how many examples its selection holds (all of them, counted in SQL)."""
    shape = selected_shape()
    if shape is None:
        return
    n = count(path, replace(flt, shape=shape))
    if shape.space == space:
        st.success(f"{n:,} examples inside the {shape.describe()}: the explorer and export now show only them.")
    else:
        st.caption(f"Only the {n:,} examples inside the {shape.describe()} are shown (clear it in the sidebar).")


@_by_content(64)
def explore(path: str, flt: Filter, sort: str, descending: bool, limit: int, offset: int) -> tuple[pl.DataFrame, int]:
    return queries.explore(cursor(path), flt, sort=sort, descending=descending, limit=limit, offset=offset)


@_by_content()
def decile_trajectories(path: str) -> pl.DataFrame:
    return queries.decile_trajectories(cursor(path, "points", "deciles"))


TRACED_KEPT = 200  # the dynamics page's most traced examples: the whole table's first so many are kept


@_by_content(64)
def trajectories(path: str, ids: tuple[str, ...]) -> pl.DataFrame:
    """Perplexity per checkpoint of ``ids``; those of the whole table's sample (the dynamics page's default, up to
    :data:`TRACED_KEPT` examples) are kept beside the table, so a new server draws them without a scan by id."""
    sampled = sample_points(path, Filter(), TRACED_KEPT, False)[0]["example_id"]
    if ids and set(ids) <= set(sampled.to_list()):
        kept = _summary(path, f"traced_{TRACED_KEPT}", queries.trajectories, sampled.to_list())
        return kept.filter(pl.col("example_id").is_in(list(ids)))
    return queries.trajectories(cursor(path), list(ids))


@_by_content(2)
def export_file(path: str, flt: Filter, split: str, fmt: str) -> tuple[bytes, int]:
    return queries.export_file(cursor(path), flt, split, fmt)


def export_data(path: str, flt: Filter, split: str, fmt: str):
    """The export's file, written when the download is asked for (the download button calls this)."""
    return lambda: export_file(path, flt, split, fmt)[0]


@_by_content()
def token_checkpoints(path: str) -> pl.DataFrame:
    return queries.token_checkpoints(cursor(path, "points", "token_checkpoints"))


@_by_content(64)
def example_tokens(path: str, example_id: str) -> dict | None:
    return queries.example_tokens(cursor(path), example_id)


@_by_content(16)
def token_texts(path: str, key: str) -> tuple[str, ...]:
    return queries.token_texts(cursor(path), key)


def token_index(path: str) -> TokenIndex:
    """The table's token index (:func:`queries.token_index`), built once and kept beside the table."""
    return table_cache(path).token_index(lambda: queries.token_index(cursor(path)))


@_by_content(8)
def token_totals(path: str, flt: Filter, every: bool = False) -> tuple[pl.DataFrame, dict]:
    """:func:`queries.token_totals` from the table's token index: of the whole table, computed once and kept
    beside it; under a filter, over a sample of :data:`queries.TOKEN_SAMPLE` of its examples unless ``every``."""
    if flt.where()[0] != "TRUE":  # the filter's count is the page's own, cached: not counted again
        sample = None if every else queries.TOKEN_SAMPLE
        matching = count(path, replace(flt, token=""))
        return queries.token_totals(cursor(path), flt, sample=sample, matching=matching, index=token_index(path))
    computed = functools.cache(lambda: queries.token_totals(cursor(path), index=token_index(path)))
    kept = table_cache(path)
    return kept.summary("token_totals", lambda: computed()[0]), kept.summary("token_totals_info", lambda: computed()[1])


@_by_content(32)
def hard_tokens(path: str, flt: Filter, min_count: int, limit: int, every: bool = False) -> tuple[pl.DataFrame, dict]:
    totals, info = token_totals(path, replace(flt, token=""), every)
    return queries.rank_hard_tokens(totals, info, min_count=min_count, limit=limit)


@st.cache_resource(show_spinner=False, max_entries=4)
def _comparison(a: str, b: str, key_a: str, key_b: str):
    """:func:`profiler.table.compare.compare_tables` of ``a`` and ``b``, kept beside ``a`` by its cache (under
    ``b``'s content key: its scalars as JSON, its frames as Parquet), so the next server on the same two tables
    reads it instead of comparing again. A resource, not data: one object for every run and session (its frames
    hold every common example, a million rows that ``st.cache_data`` would copy on every run); nothing changes it."""
    from profiler.table import compare

    computed = functools.cache(lambda: compare.compare_tables(a, b))  # once, for every part kept
    kept = table_cache(a)
    name = f"compare_{key_b}"
    numbers = kept.summary(
        name,
        lambda: {k: getattr(computed(), k) for k in ("n_a", "n_b", "same_data", "spearman", "kendall", "agreement")},
    )
    joined = kept.summary(f"{name}_joined", lambda: computed().joined)
    flips = kept.summary(f"{name}_flips", lambda: computed().flips)
    return compare.Comparison(a=a, b=b, joined=joined, flips=flips, **numbers)


def comparison(a: str, b: str):
    """The comparison of the tables ``a`` and ``b``, keyed by both tables' content (:func:`_comparison`)."""
    return _comparison(a, b, table_cache(a).key, table_cache(b).key)


@st.cache_data(show_spinner=False, max_entries=8)
def _compare_density(a: str, b: str, key_a: str, key_b: str, cells_per_axis: int):
    return queries.compare_density(_comparison(a, b, key_a, key_b).joined, cells_per_axis)


def compare_selectable(a: str, b: str) -> str:
    """The common examples of ``a`` and ``b`` at their place on the compare scatter, made once per state of ``b``
    in ``a``'s open cache (:data:`dashboard.queries.COMPARE_POINTS`): a box or lasso there selects among them in
    SQL. Returns ``b``'s content key (what a compare selection is made against).

    Raises:
        TableError: ``b`` cannot be compared with ``a`` (not scored yet, other data).
    """
    kept, key_b = table_cache(a), table_cache(b).key
    tag = f"compare_points:{b}:{key_b}"
    if not kept.made(tag):
        joined = _comparison(a, b, kept.key, key_b).joined  # outside the cache's lock: it opens cursors
        con = cursor(a)
        kept.once(tag, lambda: queries.store_compare_points(con, joined))
    return key_b


def compare_density(a: str, b: str, cells_per_axis: int):
    return _compare_density(a, b, table_cache(a).key, table_cache(b).key, cells_per_axis)


@st.cache_data(show_spinner=False, max_entries=8)
def _compare_points(a: str, b: str, key_a: str, key_b: str, cap: int) -> pl.DataFrame:
    joined = _comparison(a, b, key_a, key_b).joined
    return joined if joined.height <= cap else joined.sample(cap, seed=0)


def compare_points(a: str, b: str, cap: int) -> pl.DataFrame:
    """The common examples drawn as points on the compare scatter: all of them up to ``cap``, else a seeded sample."""
    return _compare_points(a, b, table_cache(a).key, table_cache(b).key, cap)


# --- the explorer's table ---------------------------------------------------------------------------------------
# The explorer's table fits the page: the id, the sort key, split and source, then the prompt and the response, wrapped
# over a few lines, share the rest of TABLE_WIDTH (the page's width in a window 1,400 pixels wide with the sidebar
# open; a wider page widens every column). The other columns are hidden: the table's column menu (its toolbar's eye)
# shows them.
TABLE_WIDTH = 860  # pixels
WIDTHS = {"example_id": 140, "split": 95, "source": 100, "region": 110, "status": 120}
NUMBER_WIDTH = 85  # pixels: rank, confidence, variability, mean NLL, IFD
TEXT_SHARE = {"prompt": 0.42, "response": 0.58}  # of what the other shown columns leave
SHOWN = ("example_id", "split", "source", "prompt", "response")  # and the sort key
NUMBER_FORMATS = {
    "rank": "{:,}",
    "confidence": "{:.4g}",
    "variability": "{:.4g}",
    "mean_nll": "{:.4g}",
    "ifd": "{:.3f}",
}


def table_columns(columns: list[str], sort: str, texted: set[str] = frozenset()) -> tuple[list[str], dict]:
    """The table's column order (the id, the sort key, split, source, prompt, response, then the others) and
    configuration: a width for each column, those of :data:`SHOWN` and the sort key adding up to
    :data:`TABLE_WIDTH`, and the others hidden; the numbers shown as text (``texted``, :func:`dashed`) right-aligned."""
    order = [
        c
        for c in dict.fromkeys(["example_id", sort, "split", "source", "prompt", "response", *columns])
        if c in columns
    ]
    shown = {c for c in order if c in SHOWN or c == sort}
    width = {c: WIDTHS.get(c, NUMBER_WIDTH) for c in order if c not in TEXT_SHARE}
    rest = TABLE_WIDTH - sum(w for c, w in width.items() if c in shown)
    width.update({c: int(rest * share) for c, share in TEXT_SHARE.items()})
    config = {}
    for c in order:  # (Column takes no "hidden": it is a key of the configuration it returns)
        config[c] = {
            **st.column_config.Column(
                c, width=width[c], pinned=c == "example_id" or None, alignment="right" if c in texted else None
            ),
            "hidden": c not in shown,
        }
    return order, config


def dashed(rows: pl.DataFrame) -> tuple[pl.DataFrame, set[str]]:
    """The table's rows for display, "-" where a number is missing (an example not scored yet), not "None" (what the
    table draws for a missing value, whatever a Styler says): a number column with a missing value on this page is
    shown as text (right-aligned, as numbers are); and the names of those columns."""
    texted = {c for c in NUMBER_FORMATS if c in rows.columns and rows[c].null_count()}
    shown = rows.with_columns(
        rows[c].map_elements(NUMBER_FORMATS[c].format, return_dtype=pl.Utf8).fill_null("-") for c in texted
    )
    return shown, texted


# --- the global filter ----------------------------------------------------------------------------------------
def selected_ids() -> tuple[str, ...] | None:
    return st.session_state.get("selected_ids")


SHAPE_KEY = "selected_shape"  # session state: the box or lasso drawn on a map (a queries.Shape)
# The maps' chart widgets (their selection events): a selection on any of them filters every page.
MAP_KEYS = {"data_map": "map_plot", "semantic_map": "sem_plot", "compare": "cmp_plot"}


def selected_shape() -> Shape | None:
    return st.session_state.get(SHAPE_KEY)


def select_on_map(space: str, event) -> Shape | None:
    """The shape of a map's selection event, stored as the selection when it is new (a rerun repeats the last
    event: a shape cleared in the sidebar stays cleared until another is drawn); the stored shape. A shape on the
    compare scatter records the compared table's content key."""
    shape = Shape.from_selection(space, event.selection if event else None)
    if shape is not None and space == "compare":
        try:
            shape = replace(shape, against=table_cache(compare_path()).key)
        except (TableError, TypeError, OSError):  # no compared table (any more)
            shape = None
    seen = f"_seen_{space}"
    if shape is not None and st.session_state.get(seen) != shape:
        st.session_state[SHAPE_KEY] = shape
    st.session_state[seen] = shape
    return selected_shape()


def _checked_compare_shape(sb, path: str) -> Shape | None:
    """The stored selection, with what a compare selection reads made in this table's cache; a compare selection
    made against another state of the compared table (written again since), or against one that can no longer be
    compared, is dropped with a note."""
    shape = selected_shape()
    if shape is None or shape.space != "compare":
        return shape
    try:
        current = compare_selectable(path, compare_path()) if compare_path() else None
    except (TableError, OSError):
        current = None
    if current != shape.against:
        st.session_state.pop(SHAPE_KEY, None)
        sb.caption("The selection on the compare scatter was cleared: the compared table has changed.")
        return None
    return shape


TOKEN_KEY = "token_filter"  # session state: the token chosen on the hard-tokens page (a queries.token_key)


def chosen_token() -> str:
    return st.session_state.get(TOKEN_KEY) or ""


def filter_sidebar(path: str) -> Filter:
    """The filter widgets (in the sidebar on every page) and the :class:`Filter` they define."""
    ov = overview(path)
    sb = st.sidebar
    sb.header("Filter")
    splits = sb.multiselect("Split", list(queries.SPLIT_NAMES), key="f_splits")
    sources = sb.multiselect("Source", distinct_values(path, "source"), key="f_sources")
    statuses = sb.multiselect("Status", distinct_values(path, "status"), key="f_statuses")
    regions = sb.multiselect("Region", list(queries.REGION_NAMES), key="f_regions")
    conf_min, conf_max = _perplexity_slider(sb, ov["min_log_ppl"], ov["max_log_ppl"])
    ifd_min, ifd_max = _ifd_slider(sb, ov["min_ifd"], ov["max_ifd"])
    search = sb.text_input("Search text or example id", key="f_search").strip()
    ids = selected_ids()
    # A selection drawn on a map reaches the script as that chart's widget state, before the page runs: it is the
    # filter of this run already (the sidebar's count, the map's outline).
    for space, key in MAP_KEYS.items():
        select_on_map(space, st.session_state.get(key))
    shape = _checked_compare_shape(sb, path)
    # The clear buttons act in callbacks, before the script runs again: the run they start no longer shows them.
    if ids is not None:
        sb.caption(f"{len(ids):,} examples selected on the semantic map")
        sb.button("Clear the map selection", on_click=_forget, args=("selected_ids",))
    if shape is not None:
        sb.caption(f"{count(path, Filter(shape=shape)):,} examples inside the {shape.describe()}")
        sb.button("Clear the map selection", on_click=_forget, args=(SHAPE_KEY,), key="clear_shape")
    token = chosen_token()
    if token:
        sb.caption("Only examples holding this token (chosen on the hard-tokens page):")
        sb.code(queries.visible_token(token), language=None)
        sb.button("Clear the token filter", on_click=_forget, args=(TOKEN_KEY,))
    return Filter(
        splits=tuple(splits),
        sources=tuple(sources),
        statuses=tuple(statuses),
        regions=tuple(regions),
        conf_min=conf_min,
        conf_max=conf_max,
        search=search,
        ids=ids,
        ifd_min=ifd_min,
        ifd_max=ifd_max,
        token=token,
        token_texts=token_texts(path, token) if token else (),
        shape=shape,
    )


def _log10_range(sb, label: str, lo: float, hi: float, key: str, help: str, unit: str) -> tuple[float, float] | None:
    """A range slider over log10 values ``lo``..``hi`` (widened to the slider's 0.01 steps, so it covers every
    example) and the chosen bounds back on the linear scale; None while it spans the whole range (the filter is off
    then, which also keeps the rows without a value)."""
    lo, hi = math.floor(lo * 100) / 100, math.ceil(hi * 100) / 100
    a, b = sb.slider(label, lo, hi, (lo, hi), step=0.01, key=key, help=help)
    if a <= lo and b >= hi:
        return None
    sb.caption(f"{unit} {10**a:,.4g} to {10**b:,.4g}")
    return 10**a, 10**b


def _perplexity_slider(sb, lo: float | None, hi: float | None) -> tuple[float | None, float | None]:
    """The confidence filter, on the log10 mean perplexity scale (where the examples spread out; ``lo``/``hi`` are
    log10 already), as confidence bounds (minus mean perplexity) for the :class:`Filter`; (None, None) for the full
    range, which keeps unscored rows too."""
    if lo is None or hi is None or hi <= lo:
        return None, None
    chosen = _log10_range(
        sb,
        "log10 mean perplexity (confident: low)",
        lo,
        hi,
        key="f_conf",
        help="Confidence is minus the mean perplexity over checkpoints; this filters its log10, where the bulk "
        "of examples spreads out.",
        unit="mean perplexity",
    )
    return (None, None) if chosen is None else (-chosen[1], -chosen[0])


def _ifd_slider(sb, lo: float | None, hi: float | None) -> tuple[float | None, float | None]:
    """The IFD filter, on the log10 scale (IFD often spans orders of magnitude below 1), where the profile has IFD
    values, as IFD bounds; (None, None) for the full range, which keeps the examples without an IFD too."""
    if lo is None or hi is None or lo <= 0 or hi <= lo:
        return None, None
    chosen = _log10_range(
        sb,
        "log10 IFD (instruction-following difficulty)",
        math.log10(lo),
        math.log10(hi),
        key="f_ifd",
        help="IFD = PPL(response | prompt) / PPL(response alone). Above 1 (log10 above 0), the prompt does not help "
        "the model predict the response (Superfiltering drops those). The full range also keeps examples without "
        "an IFD.",
        unit="IFD",
    )
    return chosen or (None, None)


def _forget(key: str) -> None:
    st.session_state.pop(key, None)


def current_filter() -> Filter:
    return st.session_state.get("filter", Filter())
