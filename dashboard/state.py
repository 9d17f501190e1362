"""What the pages share: the open tables, cached queries, and the global filter (sidebar).

The launcher passes the table paths in the environment (``SFTMIX_TABLE``, ``SFTMIX_COMPARE``), which also works
under ``streamlit.testing``. Each table is opened once, read-only, by the table's reader (cached as a resource for
the server's life); each query runs on its own cursor from it (thread-safe), which carries the read views.
"""

from __future__ import annotations

import math
import os

import duckdb
import polars as pl
import streamlit as st

from dashboard import COMPARE_ENV, TABLE_ENV, queries
from dashboard.queries import Filter
from profiler.table import ConfidenceTable, open_table

POINT_CAP = 20_000  # points drawn per scatter by default (WebGL copes with more; the slider goes to 200k)


def table_path() -> str:
    path = os.environ.get(TABLE_ENV)
    if not path:
        st.error(f"No table given: start the dashboard with `sftmix dashboard run.duckdb` (or set {TABLE_ENV}).")
        st.stop()
    return path


def compare_path() -> str | None:
    return os.environ.get(COMPARE_ENV) or None


@st.cache_resource(show_spinner=False)
def table(path: str) -> ConfidenceTable:
    """The reader of ``path``, opened once (it checks that this is an sftmix table of a readable version)."""
    return open_table(path)


def cursor(path: str | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh read-only cursor over the table, with the read views the queries use."""
    return table(path or table_path()).cursor()


# --- cached queries (keyed by the table path and the arguments) ---------------------------------------------
@st.cache_data(show_spinner=False)
def overview(path: str) -> dict:
    return queries.overview(cursor(path))


@st.cache_data(show_spinner=False)
def status_counts(path: str) -> pl.DataFrame:
    return queries.status_counts(cursor(path))


@st.cache_data(show_spinner=False)
def histogram(path: str, bins: int) -> pl.DataFrame:
    return queries.confidence_histogram(cursor(path), bins)


@st.cache_data(show_spinner=False)
def scale_marks(path: str) -> dict:
    return queries.scale_marks(cursor(path))


@st.cache_data(show_spinner=False)
def source_breakdown(path: str) -> pl.DataFrame:
    return queries.source_breakdown(cursor(path))


@st.cache_data(show_spinner=False)
def distinct_values(path: str, column: str) -> list[str]:
    return queries.distinct_values(cursor(path), column)


@st.cache_data(show_spinner=False, max_entries=64)
def count(path: str, flt: Filter) -> int:
    return queries.count(cursor(path), flt)


@st.cache_data(show_spinner=False, max_entries=32)
def sample_points(path: str, flt: Filter, cap: int, need_map: bool) -> tuple[pl.DataFrame, int]:
    return queries.sample_points(cursor(path), flt, cap=cap, need_map=need_map)


@st.cache_data(show_spinner=False, max_entries=64)
def explore(path: str, flt: Filter, sort: str, descending: bool, limit: int, offset: int) -> tuple[pl.DataFrame, int]:
    return queries.explore(cursor(path), flt, sort=sort, descending=descending, limit=limit, offset=offset)


@st.cache_data(show_spinner=False)
def decile_trajectories(path: str) -> pl.DataFrame:
    return queries.decile_trajectories(cursor(path))


@st.cache_data(show_spinner=False, max_entries=64)
def trajectories(path: str, ids: tuple[str, ...]) -> pl.DataFrame:
    return queries.trajectories(cursor(path), list(ids))


@st.cache_data(show_spinner=False, max_entries=16)
def export_file(path: str, flt: Filter, split: str, fmt: str) -> tuple[bytes, int]:
    return queries.export_file(cursor(path), flt, split, fmt)


@st.cache_data(show_spinner=False)
def token_checkpoints(path: str) -> pl.DataFrame:
    return queries.token_checkpoints(cursor(path))


@st.cache_data(show_spinner=False, max_entries=64)
def example_tokens(path: str, example_id: str) -> dict | None:
    return queries.example_tokens(cursor(path), example_id)


@st.cache_data(show_spinner=False, max_entries=16)
def token_texts(path: str, key: str) -> tuple[str, ...]:
    return queries.token_texts(cursor(path), key)


@st.cache_data(show_spinner=False, max_entries=32)
def hard_tokens(path: str, flt: Filter, min_count: int, limit: int) -> tuple[pl.DataFrame, dict]:
    return queries.hard_tokens(cursor(path), flt, min_count=min_count, limit=limit)


@st.cache_data(show_spinner=False)
def comparison(a: str, b: str):
    from profiler.table.compare import compare_tables

    return compare_tables(a, b)


# --- the global filter ----------------------------------------------------------------------------------------
def selected_ids() -> tuple[str, ...] | None:
    return st.session_state.get("selected_ids")


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
    # The clear buttons act in callbacks, before the script runs again: the run they start no longer shows them.
    if ids is not None:
        sb.caption(f"{len(ids):,} examples selected on the semantic map")
        sb.button("Clear the map selection", on_click=_forget, args=("selected_ids",))
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
