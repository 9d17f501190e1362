"""The dashboard's queries: pure functions over a reader's cursor, returning polars frames or dicts.

They query only the read views that :mod:`profiler.table.schema` defines (``example_view``, ``score_view``,
``token_view``, ``text_view``, ``checkpoint_view``, ``meta_view``), which the reader creates on each cursor it hands out
(:meth:`profiler.table.ConfidenceTable.cursor`). Aggregation and sampling happen in DuckDB, so a page costs the
same for 1k or 1M examples. Every value a user types reaches DuckDB as a parameter, never as SQL text.

What the pages read of every example (:data:`CACHED`: the examples without their text, with the readable scales and
their map cells; the dynamics' bins; the token-score checkpoints) is kept once per table by
:mod:`dashboard.cache` in the ``sftmix_cache`` database of the reader's connection; on a cursor without it the
same queries read the views (:func:`relation`), with the same results.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from dashboard.token_index import TokenIndex
from dashboard.token_index import build as build_token_index
from profiler.table.db import fetch_frame
from profiler.table.records import batches_frame, export_batches, write_jsonl
from profiler.table.schema import AMBIGUOUS, CONFIDENT, EASY, HARD, REGIONS, SPLITS, UNCONFIDENT

SPLIT_NAMES = (*SPLITS, "unscored")  # 'unscored': rows with no confidence (bad rows, say)
REGION_NAMES = REGIONS  # cartography regions (profiler.confidence)

# The readable scales (perplexity is heavy-tailed: linear axes put almost every example in one bar or one dot).
# Confidence is minus the mean perplexity over checkpoints, so log10(-confidence) keeps its order (reversed): the
# median split stays one line, and the bulk of examples spreads out. Variability (std of perplexity) grows with
# perplexity, so the data map shows it relative to the mean perplexity, as the regions use it.
LOG_PPL = "log10(-confidence)"
REL_VAR = "variability / -confidence"

SORTABLE = ("rank", "confidence", "variability", "mean_nll", "ifd", "row_index", "n_response_tokens", "source")

# The maps' coordinates, as columns of the points relation (:data:`CACHED`) and as expressions over example_view;
# the compare scatter's, as columns of :data:`COMPARE_POINTS` (both tables' log10 mean perplexity).
MAP_SPACES = {
    "data_map": ("rel_variability", "log_ppl"),
    "semantic_map": ("umap_x", "umap_y"),
    "compare": ("cmp_x", "cmp_y"),
}
_SPACE_SQL = {"data_map": (REL_VAR, LOG_PPL), "semantic_map": ("umap_x", "umap_y")}
MAP_NAMES = {"data_map": "data map", "semantic_map": "semantic map", "compare": "compare scatter"}
GRID = 256  # map cells per axis at the finest resolution (each map's extent, over the whole table)
GRID_STEPS = (1, 2, 4)  # cells merged per axis: resolutions of 256, 128 and 64 cells

CACHE = "sftmix_cache"  # the attached in-memory database of dashboard.cache
# The common examples of the compared tables, by this table's row_index, at their place on the compare scatter
# (``cmp_x``, ``cmp_y``): made by :func:`store_compare_points`, what a selection on that scatter is taken from.
COMPARE_POINTS = f"{CACHE}.compare_points"


def _cell(value: str, lo: str, hi: str) -> str:
    """SQL: the map cell (0 to GRID - 1) of ``value`` on an axis from ``lo`` to ``hi`` (expressions chosen by code)."""
    return f"least(CAST(floor(({value} - {lo}) / greatest({hi} - {lo}, 1e-12) * {GRID}) AS INTEGER), {GRID - 1})"


HOVER_CHARS = 120  # of the prompt, in a point's hover

# What the pages read, once per table (dashboard.cache keeps each as a table or view of the sftmix_cache database).
# ``points``: every example without its text but the start of its prompt (one row each, as example_view), with the
# readable scales, a seeded sample key (the rows are in its order, so a sample reads the first few row groups) and
# its cell on each map (dm_ix/dm_iy, sm_ix/sm_iy: GRID cells over the whole table's extent).
CACHED = {
    "points": f"""
        WITH v AS (
            SELECT example_id, row_index, source, status, split, region, confidence, mean_nll, variability,
                   quantile_bin, rank, umap_x, umap_y, ifd, n_response_tokens, {LOG_PPL} AS log_ppl,
                   {REL_VAR} AS rel_variability, hash(example_id, 0) AS sample_key,
                   left(coalesce(prompt, ''), {HOVER_CHARS}) AS prompt
            FROM example_view
        ),
        e AS (
            SELECT min(rel_variability) AS x0, max(rel_variability) AS x1, min(log_ppl) AS y0, max(log_ppl) AS y1,
                   min(umap_x) AS u0, max(umap_x) AS u1, min(umap_y) AS w0, max(umap_y) AS w1
            FROM v
        )
        SELECT v.*, {_cell("rel_variability", "x0", "x1")} AS dm_ix, {_cell("log_ppl", "y0", "y1")} AS dm_iy,
               {_cell("umap_x", "u0", "u1")} AS sm_ix, {_cell("umap_y", "w0", "w1")} AS sm_iy
        FROM v, e
        ORDER BY sample_key
    """,
    "deciles": """
        SELECT quantile_bin, checkpoint_id, step, fraction, count(*) AS examples,
               median(perplexity) AS median_ppl, quantile_cont(perplexity, 0.25) AS q25,
               quantile_cont(perplexity, 0.75) AS q75
        FROM score_view WHERE quantile_bin IS NOT NULL
        GROUP BY ALL
    """,
    "token_checkpoints": "SELECT checkpoint_id, step, fraction, count(*) AS examples FROM token_view GROUP BY ALL",
}


def cached(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The parts of :data:`CACHED` that ``con`` sees in the ``sftmix_cache`` database."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
        "UNION ALL SELECT view_name FROM duckdb_views() WHERE database_name = ?",
        [CACHE, CACHE],
    ).fetchall()
    return {r[0] for r in rows}


def relation(con: duckdb.DuckDBPyConnection, part: str) -> str:
    """The relation to read a part of :data:`CACHED` from: its cached table where ``con`` has it, else its query."""
    return f"{CACHE}.{part}" if part in cached(con) else f"({CACHED[part]})"


def _points(con: duckdb.DuckDBPyConnection) -> tuple[str, bool]:
    """The points relation (:data:`CACHED`: cached, or its query) and True: a :meth:`Filter.where` over it reads
    the points' columns (``on_points``)."""
    return relation(con, "points"), True


def _edges(xs: tuple[float, ...], ys: tuple[float, ...]) -> tuple[dict[str, list], float, float, int]:
    """A polygon's edges that are not horizontal (the last vertex joins the first), listed once per horizontal band
    of its bounding box that they reach (and the bands either side, against rounding): the columns ``band``,
    ``ya``, ``yb`` (the edge's ends' y), ``xa`` (its first end's x) and ``slope`` (dx / dy); the first band's
    y, the bands' height and their number."""
    n = len(xs)
    ends = [(xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]) for i in range(n)]
    ends = [e for e in ends if e[1] != e[3]]
    bands = max(16, min(1024, len(ends)))
    y0 = min(ys)
    height = (max(ys) - y0) / bands or 1.0
    cols: dict[str, list] = {"band": [], "ya": [], "yb": [], "xa": [], "slope": []}
    for ax, ay, bx, by in ends:
        first = int((min(ay, by) - y0) / height) - 1
        last = int((max(ay, by) - y0) / height) + 1
        for b in range(max(first, 0), min(last, bands - 1) + 1):
            cols["band"].append(b)
            cols["ya"].append(ay)
            cols["yb"].append(by)
            cols["xa"].append(ax)
            cols["slope"].append((bx - ax) / (by - ay))
    return cols, y0, height, bands


def polygon_sql(rel: str, x: str, y: str, xs: tuple[float, ...], ys: tuple[float, ...]) -> tuple[str, list[Any]]:
    """SQL true for the rows of ``rel`` whose point (``x``, ``y``) lies inside the polygon of vertices
    (``xs[i]``, ``ys[i]``) (closed: the last joins the first), and its parameters (the polygon's numbers).

    The even-odd rule by ray casting: a point is inside when a ray from it to the right crosses an odd number of
    edges, an edge (a, b) being crossed where ``(y < a.y) <> (y < b.y)`` and ``x < a.x + (y - a.y) * (b.x - a.x) /
    (b.y - a.y)``. Only the edges that reach a point's horizontal band are tested against it (a join on the band),
    so a lasso of a thousand vertices costs about what a square does; the crossings are counted per ``row_index``
    (unique per example). ``rel``, ``x`` and ``y`` are chosen by code.
    """
    cols, y0, height, bands = _edges(xs, ys)
    if not cols["band"]:
        return "FALSE", []
    box = [float(min(xs)), float(max(xs)), float(min(ys)), float(max(ys))]
    sql = f"""row_index IN (
        SELECT p.row_index FROM {rel} p
        JOIN (SELECT unnest(?::INTEGER[]) AS band, unnest(?::DOUBLE[]) AS ya, unnest(?::DOUBLE[]) AS yb,
                     unnest(?::DOUBLE[]) AS xa, unnest(?::DOUBLE[]) AS slope) e
          ON least(CAST(floor((p.{y} - ?) / ?) AS INTEGER), {bands - 1}) = e.band
        WHERE p.{x} BETWEEN ? AND ? AND p.{y} BETWEEN ? AND ?
          AND (p.{y} < e.ya) <> (p.{y} < e.yb) AND p.{x} < e.xa + (p.{y} - e.ya) * e.slope
        GROUP BY p.row_index HAVING count(*) % 2 = 1)"""
    params = [cols["band"], cols["ya"], cols["yb"], cols["xa"], cols["slope"], float(y0), float(height), *box]
    return sql, params


@dataclass(frozen=True)
class Shape:
    """A selection drawn on a map: every example inside one of its parts (a box or a lasso), chosen in SQL on the
    examples' coordinates, not only among the points drawn.

    ``space`` is the map (a key of :data:`MAP_SPACES`); ``parts`` holds ``(kind, xs, ys)`` per box or lasso: a box's
    ``xs`` and ``ys`` are its two corners' x and y, a lasso's its vertices. ``against``, for the compare scatter: the
    content key of the table compared with (its places depend on it, and so does every result cached by filter).
    """

    space: str
    parts: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...]
    against: str = ""

    @classmethod
    def from_selection(cls, space: str, selection: dict | None) -> Shape | None:
        """The shape of a Streamlit plotly selection (its ``box`` and ``lasso`` lists, in data coordinates); None
        without one."""
        if space not in MAP_SPACES or not selection:
            return None
        parts = []
        for kind in ("box", "lasso"):
            for item in selection.get(kind) or []:
                xs, ys = tuple(float(v) for v in item.get("x") or ()), tuple(float(v) for v in item.get("y") or ())
                if len(xs) == len(ys) and len(xs) >= (2 if kind == "box" else 3):
                    parts.append((kind, xs, ys))
        return cls(space, tuple(parts)) if parts else None

    def describe(self) -> str:
        kinds = {k for k, _, _ in self.parts}
        what = "box" if kinds == {"box"} else "lasso" if kinds == {"lasso"} else "shapes"
        return f"{what} on the {MAP_NAMES[self.space]}"

    def where(self, rel: str, on_points: bool) -> tuple[str, list[Any]]:
        """SQL over ``rel``, the points relation (``on_points``) or example_view, and its parameters."""
        x, y = MAP_SPACES[self.space]
        if self.space == "compare":  # the coordinates are in COMPARE_POINTS, by row_index
            rel, on_points = COMPARE_POINTS, True
        elif not on_points:  # the coordinates are expressions over example_view
            sx, sy = _SPACE_SQL[self.space]
            rel = f"(SELECT row_index, {sx} AS {x}, {sy} AS {y} FROM example_view)"
        parts, params = [], []
        for kind, xs, ys in self.parts:
            if kind == "box":
                cx, cy = (x, y) if on_points else _SPACE_SQL[self.space]
                inside = f"(({cx}) BETWEEN ? AND ? AND ({cy}) BETWEEN ? AND ?)"
                if self.space == "compare":
                    inside = f"row_index IN (SELECT row_index FROM {rel} WHERE {inside})"
                parts.append(inside)
                params += [min(xs), max(xs), min(ys), max(ys)]
            else:
                sql, more = polygon_sql(rel, x, y, xs, ys)
                parts.append(f"({sql})")
                params += more
        return "(" + " OR ".join(parts) + ")", params


# Tokens are grouped (hard tokens) and matched (the token filter) by their text with leading and trailing whitespace
# trimmed, so " the" and "the" are one token; a token of whitespace alone keeps it, shown visibly (see token_key).
_WS = "[ \\t\\n\\f\\r]"  # space, tab, newline, form feed, CR
_TRIM = f"^{_WS}+|{_WS}+$"
_VISIBLE = {"\n": "\u21b5", "\t": "\u21e5", " ": "\u2423", "\r": "\u240d", "\f": "\u240c"}  # ↵ ⇥ ␣ ␍ ␌


def token_key(token: str) -> str:
    """The grouping key of a token's text: trimmed of whitespace, or, for whitespace alone, that whitespace made
    visible (``"\\n"`` is ``"↵"``, ``" "`` is ``"␣"``); ``""`` stays ``""``."""
    trimmed = re.sub(_TRIM, "", token)
    return trimmed if trimmed else "".join(_VISIBLE.get(ch, ch) for ch in token)


def visible_token(key: str) -> str:
    """A token key for a one-line display: inner newlines and tabs shown as ↵ and ⇥."""
    return key.replace("\n", _VISIBLE["\n"]).replace("\t", _VISIBLE["\t"]).replace("\r", _VISIBLE["\r"])


def checkpoint_number(checkpoint_id: int) -> int:
    """The number the UI shows for a checkpoint: 1-based, as the CLI counts them ("scoring checkpoint 3/3"); the
    table's ``checkpoint_id`` stays 0-based."""
    return int(checkpoint_id) + 1


def checkpoint_label(checkpoint_id: int, step: int | None = None, fraction: float | None = None) -> str:
    """``"checkpoint 3 · step 38 · 100% of the epoch"`` (1-based, :func:`checkpoint_number`), without the parts
    that are unknown."""
    label = f"checkpoint {checkpoint_number(checkpoint_id)}"
    if step is not None:
        label += f" · step {step:,}"
    if fraction is not None:
        label += f" · {fraction:.0%} of the epoch"
    return label


def numbered_checkpoints(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` for display: its 0-based ``checkpoint_id`` replaced by ``checkpoint``, 1-based, first."""
    if "checkpoint_id" not in frame.columns:
        return frame
    number = (pl.col("checkpoint_id") + 1).alias("checkpoint")
    return frame.select(number, pl.exclude("checkpoint_id"))


def _last_token_checkpoint() -> str:
    return "(SELECT max(checkpoint_id) FROM token_view)"


@dataclass(frozen=True)
class Filter:
    """The explorer's filter; every page that lists examples applies it.

    Empty tuples mean "any". ``conf_min``/``conf_max`` bound the confidence (minus mean perplexity; the sidebar
    sets them from a log-perplexity range). ``ifd_min``/``ifd_max`` bound the IFD (examples without one drop out
    when either is set). ``search`` matches the prompt or response (case-insensitive substring) or an exact id;
    ``ids`` is a list of example ids; ``shape`` a box or lasso drawn on a map (:class:`Shape`); ``token`` keeps the
    examples whose response holds that token (a :func:`token_key`, chosen on the hard-tokens page): those holding
    one of ``token_texts``, the token texts of that key (:func:`token_texts`), at the last checkpoint with token
    scores.
    """

    splits: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    conf_min: float | None = None
    conf_max: float | None = None
    search: str = ""
    ids: tuple[str, ...] | None = None
    ifd_min: float | None = None
    ifd_max: float | None = None
    token: str = ""
    token_texts: tuple[str, ...] = ()
    shape: Shape | None = None

    def where(self, rel: str = "example_view", on_points: bool = False) -> tuple[str, list[Any]]:
        """A WHERE clause over ``example_view``'s columns (or, ``on_points``, those of the points relation ``rel``,
        :data:`CACHED`, where the text search reads text_view) and its parameters."""
        parts, params = ["TRUE"], []
        if self.splits:
            parts.append("list_contains(?::VARCHAR[], split)")
            params.append(list(self.splits))
        if self.sources:
            parts.append("list_contains(?::VARCHAR[], source)")
            params.append(list(self.sources))
        if self.statuses:
            parts.append("list_contains(?::VARCHAR[], status)")
            params.append(list(self.statuses))
        if self.regions:
            parts.append("list_contains(?::VARCHAR[], region)")
            params.append(list(self.regions))
        if self.conf_min is not None:
            parts.append("confidence >= ?")
            params.append(float(self.conf_min))
        if self.conf_max is not None:
            parts.append("confidence <= ?")
            params.append(float(self.conf_max))
        if self.search:
            text = (
                "(contains(lower(coalesce(prompt, '')), lower(?)) OR contains(lower(coalesce(response, '')), lower(?))"
                " OR example_id = ?)"
            )
            parts.append(f"example_id IN (SELECT example_id FROM text_view WHERE {text})" if on_points else text)
            params += [self.search, self.search, self.search]
        if self.ids is not None:
            parts.append("example_id IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(self.ids))
        if self.ifd_min is not None:
            parts.append("ifd >= ?")
            params.append(float(self.ifd_min))
        if self.ifd_max is not None:
            parts.append("ifd <= ?")
            params.append(float(self.ifd_max))
        if self.token:
            parts.append(
                "example_id IN (SELECT example_id FROM (SELECT example_id, unnest(tokens) AS tok FROM token_view "
                f"WHERE checkpoint_id = {_last_token_checkpoint()}) WHERE list_contains(?::VARCHAR[], tok))"
            )
            params.append(list(self.token_texts))
        if self.shape is not None:
            sql, more = self.shape.where(rel, on_points)
            parts.append(sql)
            params += more
        return " AND ".join(parts), params


def _scalar(con: duckdb.DuckDBPyConnection, q: str, params: list | None = None) -> Any:
    return con.execute(q, params or []).fetchone()[0]


def meta(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta_view").fetchall()}


def overview(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Counts for the overview page."""
    m = meta(con)
    rel, _ = _points(con)
    examples, scored, confident, unconfident, embedded, lo, med, hi, n_ifd, ifd_lo, ifd_med, ifd_hi = con.execute(
        f"""
        SELECT count(*), count(confidence), count(*) FILTER (WHERE split = '{CONFIDENT}'),
               count(*) FILTER (WHERE split = '{UNCONFIDENT}'), count(umap_x), min(confidence), median(confidence),
               max(confidence), count(ifd), min(ifd), median(ifd), max(ifd)
        FROM {rel}
        """
    ).fetchone()
    regions = dict(con.execute(f"SELECT region, count(*) FROM {rel} WHERE region IS NOT NULL GROUP BY 1").fetchall())
    return {
        "examples": examples,
        "scored": scored,
        "confident": confident,
        "unconfident": unconfident,
        "checkpoints": _scalar(con, "SELECT count(*) FROM checkpoint_view"),
        "embedded": embedded,
        "median_confidence": med,
        "min_confidence": lo,
        "max_confidence": hi,
        # the same on the readable scale, log10 of the mean perplexity (the minimum comes from the maximum)
        "min_log_ppl": None if hi is None else math.log10(-hi),
        "median_log_ppl": None if med is None else math.log10(-med),
        "max_log_ppl": None if lo is None else math.log10(-lo),
        "regions": {r: regions.get(r, 0) for r in REGION_NAMES},
        # IFD (None where no example has one: older files, or --no-ifd)
        "with_ifd": n_ifd,
        "min_ifd": ifd_lo,
        "median_ifd": ifd_med,
        "max_ifd": ifd_hi,
        "reference_model": m.get("reference_model"),
        "created_at": m.get("created_at"),
        "stage_seconds": m.get("stage_seconds") or {},
        "projection": m.get("projection"),
    }


def run_progress(m: dict[str, Any]) -> dict[str, Any]:
    """Where the run that wrote a table stands, from its meta (:func:`meta`): ``done`` (the stages recorded as
    finished, in order), ``unfinished`` (those that took time but are not finished: running, or stopped), ``seconds``
    (each stage's wall time so far), ``embed`` and ``projection`` (the run's settings; None where the meta does not
    say, as in tables written without a run's config) and ``embed_done`` (whether the embed stage finished; None
    where no stage is recorded)."""
    stages = m.get("stages") or {}
    seconds = m.get("stage_seconds") or {}
    config = m.get("score_config") or {}
    return {
        "done": [k for k, v in stages.items() if v == "done"],
        "unfinished": [k for k in seconds if stages.get(k) != "done"],
        "seconds": seconds,
        "embed": config.get("embed"),
        "projection": config.get("projection"),
        "embed_done": (stages.get("embed") == "done") if stages else None,
    }


def stage_times(progress: dict[str, Any]) -> str:
    """The overview's line of stage times: the finished stages' times, then the unfinished ones by name (a stage's
    time is recorded when it ends, so a running one has none yet); "" where no stage has a time."""
    done = [f"{k} {v:,.1f}s" for k, v in progress["seconds"].items() if k not in progress["unfinished"]]
    text = "Stage times: " + ", ".join(done) if done else ""
    if progress["unfinished"]:
        text += (" · " if text else "") + "not finished yet: " + ", ".join(progress["unfinished"])
    return text


def no_map_reason(progress: dict[str, Any]) -> str:
    """Why a profile shows no semantic map: not asked for (``--no-embed``, ``--projection none``), or not there yet
    (the run's embed stage has not finished: the embeddings come with the last checkpoint's scores)."""
    if progress["embed"] is False:
        return "This profile has no embedding map: it was profiled with --no-embed."
    if progress["projection"] == "none":
        return "This profile has no embedding map: it was profiled with --projection none."
    if progress["embed_done"] is False:
        return (
            "Not embedded yet: the embedding comes with the last checkpoint's scoring, and the map is drawn when "
            "the scoring ends."
        )
    return "This profile has no embedding map (profiled with --no-embed or --projection none)."


def status_counts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    rel, _ = _points(con)
    return fetch_frame(con, f"SELECT status, count(*) AS examples FROM {rel} GROUP BY 1 ORDER BY 2 DESC, 1")


def confidence_histogram(con: duckdb.DuckDBPyConnection, bins: int = 60) -> pl.DataFrame:
    """Counts of examples per (bin, split) of log10 mean perplexity (:data:`LOG_PPL`), binned in DuckDB.

    Columns ``lo``, ``hi`` (the bin's edges, in log10 perplexity), ``split``, ``count``. Equal widths on the log
    scale, from the lowest to the highest mean perplexity.
    """
    rel, _ = _points(con)
    lo, hi = con.execute(f"SELECT min(log_ppl), max(log_ppl) FROM {rel}").fetchone()
    if lo is None:
        return pl.DataFrame(schema={"lo": pl.Float64, "hi": pl.Float64, "split": pl.Utf8, "count": pl.Int64})
    width = (hi - lo) / bins if hi > lo else 1.0
    return fetch_frame(
        con,
        f"""
        SELECT ? + b * ? AS lo, ? + (b + 1) * ? AS hi, split, count(*) AS count
        FROM (SELECT least(CAST(floor((log_ppl - ?) / ?) AS BIGINT), ? - 1) AS b, split FROM {rel}
              WHERE confidence IS NOT NULL)
        GROUP BY b, split ORDER BY b, split
        """,
        [lo, width, lo, width, lo, width, bins],
    )


def scale_marks(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Where the charts draw their reference lines, on the readable scales (whole table, no filter).

    ``median_log_ppl``: the median split. ``bin_edges``: the edges between adjacent quantile bins (midway between
    the neighbouring examples), ascending. ``ambiguous_from``: the relative variability above which examples are
    ``ambiguous`` (midway between the last ambiguous and the first other one); None without ambiguous examples.
    """
    rel, _ = _points(con)
    med = _scalar(con, f"SELECT median(confidence) FROM {rel}")
    bins = con.execute(
        f"SELECT min(log_ppl), max(log_ppl) FROM {rel} WHERE quantile_bin IS NOT NULL GROUP BY quantile_bin ORDER BY 1"
    ).fetchall()
    edges = [(a_hi + b_lo) / 2 for (_, a_hi), (b_lo, _) in zip(bins, bins[1:])]
    amb_lo, rest_hi = con.execute(
        f"SELECT min(rel_variability) FILTER (WHERE region = '{AMBIGUOUS}'), "
        f"max(rel_variability) FILTER (WHERE region <> '{AMBIGUOUS}') FROM {rel}"
    ).fetchone()
    ambiguous_from = None if amb_lo is None else (amb_lo if rest_hi is None else (amb_lo + rest_hi) / 2)
    return {
        "median_log_ppl": None if med is None else math.log10(-med),
        "bin_edges": edges,
        "ambiguous_from": ambiguous_from,
    }


def source_breakdown(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per source: examples, scored, split sizes, share confident, median confidence."""
    rel, _ = _points(con)
    return fetch_frame(
        con,
        f"""
        SELECT source, count(*) AS examples, count(confidence) AS scored,
               count(*) FILTER (WHERE split = '{CONFIDENT}') AS confident,
               count(*) FILTER (WHERE split = '{UNCONFIDENT}') AS unconfident,
               round(count(*) FILTER (WHERE split = '{CONFIDENT}') / greatest(count(confidence), 1), 4)
                   AS share_confident,
               median(confidence) AS median_confidence
        FROM {rel}
        GROUP BY 1 ORDER BY 1
        """,
    )


def distinct_values(con: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    """Distinct sources or statuses (``column`` is chosen by code from a fixed set, never by the user)."""
    if column not in ("source", "status"):
        raise ValueError(f"no distinct values for {column!r}")
    rel, _ = _points(con)
    return [r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM {rel} ORDER BY 1").fetchall()]


def _filtered(con: duckdb.DuckDBPyConnection, flt: Filter) -> tuple[str, str, list[Any]]:
    """The points relation, the filter's WHERE clause over it and the parameters."""
    rel, on_points = _points(con)
    where, params = flt.where(rel, on_points)
    return rel, where, params


def count(con: duckdb.DuckDBPyConnection, flt: Filter) -> int:
    rel, where, params = _filtered(con, flt)
    return _scalar(con, f"SELECT count(*) FROM {rel} WHERE {where}", params)


def split_counts(con: duckdb.DuckDBPyConnection, flt: Filter) -> dict[str, int]:
    """The filtered examples per split (``confident``, ``unconfident``, ``unscored``)."""
    rel, where, params = _filtered(con, flt)
    rows = dict(con.execute(f"SELECT split, count(*) FROM {rel} WHERE {where} GROUP BY 1", params).fetchall())
    return {name: rows.get(name, 0) for name in SPLIT_NAMES}


def _map_where(space: str | None) -> str:
    """What a map needs of a point: a confidence, and on the semantic map its coordinates."""
    return " AND confidence IS NOT NULL" + (" AND umap_x IS NOT NULL" if space == "semantic_map" else "")


def sample_points(
    con: duckdb.DuckDBPyConnection, flt: Filter, *, cap: int, seed: int = 0, need_map: bool = False
) -> tuple[pl.DataFrame, int]:
    """At most ``cap`` filtered, scored examples for a scatter (a seeded hash sample in DuckDB) and the total.

    Returns columns for plotting and hovering, with the readable scales ``log_ppl`` (log10 mean perplexity) and
    ``rel_variability`` (variability / mean perplexity); ``prompt`` is cut to :data:`HOVER_CHARS` characters.
    """
    rel, where, params = _filtered(con, flt)
    where += _map_where("semantic_map" if need_map else None)
    total = _scalar(con, f"SELECT count(*) FROM {rel} WHERE {where}", params)
    key = "sample_key" if seed == 0 else "hash(example_id, ?)"
    frame = fetch_frame(
        con,
        f"""
        SELECT example_id, source, split, region, confidence, variability, mean_nll, quantile_bin, umap_x, umap_y,
               ifd, log_ppl, rel_variability, prompt
        FROM {rel} WHERE {where}
        ORDER BY {key} LIMIT ?
        """,
        [*params, *([] if seed == 0 else [seed]), cap],
    )
    return frame, total


def map_extent(con: duckdb.DuckDBPyConnection, space: str) -> tuple[float, float, float, float] | None:
    """(x0, x1, y0, y1): the whole table's extent on a map (:data:`MAP_SPACES`), which its cells divide; None
    where no example has coordinates there."""
    rel, _ = _points(con)
    x, y = MAP_SPACES[space]
    row = con.execute(f"SELECT min({x}), max({x}), min({y}), max({y}) FROM {rel} WHERE {x} IS NOT NULL").fetchone()
    return None if row[0] is None else tuple(float(v) for v in row)


def density(con: duckdb.DuckDBPyConnection, flt: Filter, space: str, step: int = 1) -> pl.DataFrame:
    """Every filtered example of a map, counted per cell in DuckDB (cells of :data:`GRID` / ``step`` per axis over
    the whole table's extent, :func:`map_extent`), with what the cells are coloured by.

    Columns ``ix``, ``iy`` (the cell), ``count``, ``mean_log_ppl``, ``share_confident`` (of the scored),
    ``easy``, ``ambiguous``, ``hard`` (examples per region), ``source`` (the most frequent), ``mean_log_ifd``
    (of those with an IFD; NULL where none).
    """
    if step not in GRID_STEPS:
        raise ValueError(f"cells are merged by one of {GRID_STEPS}, not {step!r}")
    rel, where, params = _filtered(con, flt)
    ix, iy = ("dm_ix", "dm_iy") if space == "data_map" else ("sm_ix", "sm_iy")
    return fetch_frame(
        con,
        f"""
        SELECT {ix} // {step} AS ix, {iy} // {step} AS iy, count(*) AS count, avg(log_ppl) AS mean_log_ppl,
               avg(CASE WHEN split = '{CONFIDENT}' THEN 1.0 ELSE 0.0 END) AS share_confident,
               count(*) FILTER (WHERE region = '{EASY}') AS easy,
               count(*) FILTER (WHERE region = '{AMBIGUOUS}') AS ambiguous,
               count(*) FILTER (WHERE region = '{HARD}') AS hard,
               mode(source) AS source, avg(log10(ifd)) FILTER (WHERE ifd > 0) AS mean_log_ifd
        FROM {rel} WHERE {where}{_map_where(space)} AND {ix} IS NOT NULL AND {iy} IS NOT NULL
        GROUP BY ALL ORDER BY 1, 2
        """,
        params,
    )


def table_labels(a: str, b: str) -> tuple[str, str]:
    """Names for two tables that tell them apart: each path's last parts (folder and file, then more folders while
    those are the same: two ``run.duckdb`` files read ``weak/run.duckdb`` and ``strong/run.duckdb``)."""
    pa, pb = Path(a).resolve().parts, Path(b).resolve().parts
    n = 2
    while n < max(len(pa), len(pb)) and pa[-n:] == pb[-n:]:
        n += 1
    return "/".join(pa[-n:]), "/".join(pb[-n:])


def store_compare_points(con: duckdb.DuckDBPyConnection, joined: pl.DataFrame) -> int:
    """Make :data:`COMPARE_POINTS` from a comparison's common examples (``example_id``, ``confidence_a``,
    ``confidence_b``): each at its place on the compare scatter, by this table's ``row_index``; returns its rows."""
    frame = joined.select("example_id", "confidence_a", "confidence_b")
    con.register("compared_rows", frame)
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {COMPARE_POINTS} AS
            SELECT e.row_index, log10(-c.confidence_a) AS cmp_x, log10(-c.confidence_b) AS cmp_y
            FROM compared_rows c JOIN (SELECT example_id, row_index FROM {_points(con)[0]}) e USING (example_id)
            """
        )
    finally:
        con.unregister("compared_rows")
    return _scalar(con, f"SELECT count(*) FROM {COMPARE_POINTS}")


def compare_density(
    joined: pl.DataFrame, cells_per_axis: int
) -> tuple[pl.DataFrame, tuple[float, float, float, float]]:
    """Every common example of a comparison counted per cell (in DuckDB) on the log10 mean perplexity under each
    reference (x: A, y: B): the cells (``ix``, ``iy``, ``count``, ``share_confident`` under A, ``flipped``: the
    share whose split differs) and the extent (x0, x1, y0, y1)."""
    con = duckdb.connect()
    con.register("joined", joined.select("confidence_a", "confidence_b", "split_a", "split_b").to_arrow())
    x0, x1, y0, y1 = con.execute(
        "SELECT min(log10(-confidence_a)), max(log10(-confidence_a)), min(log10(-confidence_b)), "
        "max(log10(-confidence_b)) FROM joined"
    ).fetchone()
    n = int(cells_per_axis)

    def cell(value: str) -> str:
        return f"least(CAST(floor(({value} - ?) / greatest(? - ?, 1e-12) * ?) AS INTEGER), ? - 1)"

    frame = fetch_frame(
        con,
        f"""
        SELECT {cell("log10(-confidence_a)")} AS ix, {cell("log10(-confidence_b)")} AS iy,
               count(*) AS count, avg(CASE WHEN split_a = '{CONFIDENT}' THEN 1.0 ELSE 0.0 END) AS share_confident,
               avg(CASE WHEN split_a <> split_b THEN 1.0 ELSE 0.0 END) AS flipped
        FROM joined GROUP BY ALL ORDER BY 1, 2
        """,
        [x0, x1, x0, n, n, y0, y1, y0, n, n],
    )
    con.close()
    return frame, (x0, x1, y0, y1)


EXPLORE_CHARS = 300  # of the prompt and the response in the explorer's table (the detail below shows them whole)


def _clipped(col: str, n: int) -> str:
    """SQL: the text of ``col`` (a column chosen by code) cut to ``n`` characters, ending in "…" where cut."""
    return f"(CASE WHEN length({col}) > {n} THEN left({col}, {n - 1}) || '…' ELSE coalesce({col}, '') END)"


def explore(
    con: duckdb.DuckDBPyConnection,
    flt: Filter,
    *,
    sort: str = "rank",
    descending: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[pl.DataFrame, int]:
    """One page of the filtered examples, sorted, and the number that match; ``prompt`` and ``response`` are cut to
    :data:`EXPLORE_CHARS` characters (ending in "…" where cut)."""
    if sort not in SORTABLE:
        raise ValueError(f"cannot sort by {sort!r}; choose one of {SORTABLE}")
    rel, where, params = _filtered(con, flt)
    total = _scalar(con, f"SELECT count(*) FROM {rel} WHERE {where}", params)
    # The page's rows from the points; their text from text_view, for those rows only.
    page = fetch_frame(
        con,
        f"""
        SELECT example_id, source, split, region, confidence, variability, mean_nll, ifd, rank, status
        FROM {rel} WHERE {where}
        ORDER BY {sort} {"DESC" if descending else "ASC"} NULLS LAST, example_id LIMIT ? OFFSET ?
        """,
        [*params, int(limit), int(offset)],
    )
    ids = page["example_id"].to_list()
    text = fetch_frame(
        con,
        f"""
        SELECT example_id, {_clipped("prompt", EXPLORE_CHARS)} AS prompt,
               {_clipped("response", EXPLORE_CHARS)} AS response
        FROM text_view WHERE example_id IN ({", ".join("?" * len(ids)) or "NULL"})
        """,
        ids,
    )
    return page.join(text, on="example_id", how="left", maintain_order="left"), total


def example_detail(con: duckdb.DuckDBPyConnection, example_id: str) -> dict[str, Any] | None:
    """Everything about one example: its row, messages, original record and per-checkpoint scores."""
    frame = fetch_frame(con, "SELECT * FROM example_view WHERE example_id = ?", [example_id])
    if frame.is_empty():
        return None
    row = frame.row(0, named=True)
    row["messages"] = json.loads(row["messages"]) if row["messages"] else None
    row["record"] = json.loads(row["record"]) if row["record"] else None
    row["scores"] = fetch_frame(
        con,
        "SELECT checkpoint_id, step, fraction, perplexity, mean_nll, n_tokens FROM score_view "
        "WHERE example_id = ? ORDER BY checkpoint_id",
        [example_id],
    )
    return row


def checkpoint_labels(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return fetch_frame(con, "SELECT checkpoint_id, step, fraction FROM checkpoint_view ORDER BY checkpoint_id")


def trajectories(con: duckdb.DuckDBPyConnection, ids: list[str]) -> pl.DataFrame:
    """Perplexity of the given examples at each checkpoint."""
    return fetch_frame(
        con,
        """
        SELECT example_id, checkpoint_id, step, fraction, perplexity, split FROM score_view
        WHERE list_contains(?::VARCHAR[], example_id) ORDER BY example_id, checkpoint_id
        """,
        [list(ids)],
    )


def decile_trajectories(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per confidence bin and checkpoint: median and quartiles of perplexity (bin 0 = least confident)."""
    return fetch_frame(con, f"SELECT * FROM {relation(con, 'deciles')} ORDER BY 1, 2")


def export_file(con: duckdb.DuckDBPyConnection, flt: Filter, split: str, fmt: str) -> tuple[bytes, int]:
    """The filtered examples of ``split`` as a JSONL or Parquet file (original fields + confidence columns)."""
    if split not in SPLITS:
        raise ValueError(f"export a confident or unconfident split, not {split!r}")
    where, params = flt.where()
    batches = export_batches(con, f"{where} AND split = ?", [*params, split])
    if fmt == "jsonl":
        buf, n = io.StringIO(), 0
        for batch in batches:
            write_jsonl(batch, buf)
            n += len(batch)
        return buf.getvalue().encode("utf-8"), n
    if fmt == "parquet":
        out = io.BytesIO()
        frame = batches_frame(batches)
        frame.write_parquet(out)
        return out.getvalue(), frame.height
    raise ValueError(f"export format must be jsonl or parquet, got {fmt!r}")


# --- token scores (schema 1.1: token_view) --------------------------------------------------------------------
def token_checkpoints(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The checkpoints that have token scores (``checkpoint_id``, ``step``, ``fraction``, ``examples``), in order;
    empty where the profile stored none (``--token-scores none``, or a file written before them)."""
    return fetch_frame(con, f"SELECT * FROM {relation(con, 'token_checkpoints')} ORDER BY 1")


def example_tokens(con: duckdb.DuckDBPyConnection, example_id: str) -> dict[str, Any] | None:
    """One example's token scores: ``tokens`` (the decoded text of each scored response token), ``nll`` (by
    checkpoint id, each the same length and order as ``tokens``), ``checkpoints`` (those rows' ``checkpoint_id``,
    ``step``, ``fraction``), and the profile's ``first`` and ``last`` checkpoint ids. None where the example has
    no token scores."""
    rows = con.execute(
        "SELECT checkpoint_id, step, fraction, nll, tokens FROM token_view WHERE example_id = ? ORDER BY 1",
        [example_id],
    ).fetchall()
    if not rows:
        return None
    first, last = con.execute("SELECT min(checkpoint_id), max(checkpoint_id) FROM checkpoint_view").fetchone()
    return {
        "tokens": next((r[4] for r in rows if r[4] is not None), None) or [],
        "nll": {r[0]: r[3] for r in rows},
        "checkpoints": pl.DataFrame(
            [r[:3] for r in rows],
            schema={"checkpoint_id": pl.Int64, "step": pl.Int64, "fraction": pl.Float64},
            orient="row",
        ),
        "first": first,
        "last": last,
    }


def token_texts(con: duckdb.DuckDBPyConnection, key: str) -> tuple[str, ...]:
    """The token texts (at the last checkpoint with token scores) whose :func:`token_key` is ``key``: what
    :attr:`Filter.token_texts` holds for :attr:`Filter.token` ``key``. Keys are computed on the distinct texts only
    (string functions on every token occurrence would cost seconds on a large profile)."""
    rows = con.execute(
        f"SELECT DISTINCT unnest(tokens) FROM token_view WHERE checkpoint_id = {_last_token_checkpoint()}"
    ).fetchall()
    return tuple(sorted(t for (t,) in rows if t is not None and token_key(t) == key))


# Hard tokens under a filter that matches more examples than this are counted over a seeded sample of this many
# (from the token index 20,000 take tens of milliseconds at any table size; all of them, in proportion to their number).
TOKEN_SAMPLE = 20_000
_INDEX_BATCH = 65_536  # rows of token lists per record batch while the token index is built


def token_index(con: duckdb.DuckDBPyConnection) -> TokenIndex:
    """The :class:`dashboard.token_index.TokenIndex` of the last checkpoint with token scores: every example's
    tokens (``token_view``: each ``nll`` element with the ``tokens`` element of the same position) grouped by
    :func:`token_key`, by the example's ``row_index``. One pass over the token lists, in record batches."""
    found = con.execute(
        f"SELECT checkpoint_id, step, fraction FROM checkpoint_view WHERE checkpoint_id = {_last_token_checkpoint()}"
    ).fetchall()
    cp = found[0] if found else None
    info: dict[str, Any] = dict(zip(("checkpoint_id", "step", "fraction"), cp or (None, None, None)))
    points = relation(con, "points")
    rows = con.execute(f"SELECT coalesce(max(row_index) + 1, 0) FROM {points}").fetchall()[0][0]
    batches: Any = ()
    if cp is not None:
        batches = con.sql(
            f"SELECT p.row_index, t.nll, t.tokens FROM token_view t JOIN {points} p USING (example_id) "
            "WHERE t.checkpoint_id = $cp",
            params={"cp": cp[0]},
        ).to_arrow_reader(_INDEX_BATCH)
    return build_token_index(batches, rows, token_key, info)


def token_totals(
    con: duckdb.DuckDBPyConnection,
    flt: Filter | None = None,
    *,
    sample: int | None = None,
    matching: int | None = None,
    index: TokenIndex | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Every token's totals at the last checkpoint with token scores, over the examples of ``flt`` (its ``token``
    ignored): what :func:`rank_hard_tokens` ranks (the pages keep it for the whole table). The filter's examples
    are chosen in DuckDB (their ``row_index``); their totals are summed from the token index
    (:func:`token_index`, built here when not given), so the cost follows the examples counted, not the table.

    Args:
        sample: where the filter matches more examples than this, count only this many of them, the first by the
            points' seeded ``sample_key`` (the same examples on every call, and the maps' sample order).
        matching: how many examples ``flt`` matches, where the caller has counted them already (else counted here).
        index: the table's token index (the pages keep one per table).

    Returns:
        The frame ``token`` (the key), ``n`` (occurrences), ``s`` (their NLL sum), ``examples`` (holding it), in
        key order; and ``checkpoint_id``, ``step``, ``fraction`` of that checkpoint (None without token scores), the
        ``examples`` counted (those holding a token), ``matching`` (the examples the filter matches) and
        ``sampled`` (how many of them were taken, or None when every one was).
    """
    flt = replace(Filter() if flt is None else flt, token="")
    index = token_index(con) if index is None else index
    rel, where, params = _filtered(con, flt)
    if matching is None:
        matching = count(con, flt)
    sampled = int(sample) if sample is not None and matching > int(sample) else None
    rows = None
    if sampled is not None or where != "TRUE":
        limit = f" ORDER BY sample_key LIMIT {sampled}" if sampled is not None else ""
        rows = con.execute(f"SELECT row_index FROM {rel} WHERE {where}{limit}", params).fetchnumpy()["row_index"]
    frame, examples = index.totals(rows)
    summary: dict[str, Any] = dict(index.info)
    summary.update(matching=matching, sampled=sampled, examples=examples)
    return frame, summary


def rank_hard_tokens(
    totals: pl.DataFrame, info: dict[str, Any], *, min_count: int = 5, limit: int = 100
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The tokens of :func:`token_totals` with the highest mean NLL; tokens seen fewer than ``min_count`` times are
    left out (a rare token's mean is noise).

    Returns:
        The frame ``token`` (the key), ``mean_nll``, ``count`` (occurrences), ``examples`` (holding it),
        ``share_nll`` (its share of all the NLL counted), highest mean first (ties by token), at most ``limit``
        rows; and a summary: ``checkpoint_id``, ``step``, ``fraction`` of that checkpoint (None without token
        scores), ``examples`` and ``tokens`` counted, ``distinct`` tokens, ``kept`` (those with ``min_count``).
    """
    total = float(totals["s"].sum()) if totals.height else 0.0
    kept = totals.filter(pl.col("n") >= int(min_count))
    frame = (
        kept.select(
            "token",
            mean_nll=pl.col("s") / pl.col("n"),
            count=pl.col("n").cast(pl.Int64),
            examples=pl.col("examples").cast(pl.Int64),
            share_nll=pl.col("s") / (total or 1.0),
        )
        .sort(["mean_nll", "token"], descending=[True, False])
        .head(int(limit))
    )
    summary = dict(info)
    summary.update(tokens=int(totals["n"].sum()) if totals.height else 0, distinct=totals.height, kept=kept.height)
    return frame, summary


def hard_tokens(
    con: duckdb.DuckDBPyConnection,
    flt: Filter | None = None,
    *,
    min_count: int = 5,
    limit: int = 100,
    sample: int | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The tokens with the highest mean NLL at the last checkpoint with token scores, over the examples of ``flt``
    (its ``token`` ignored, at most ``sample`` of them): :func:`rank_hard_tokens` of :func:`token_totals`."""
    totals, info = token_totals(con, flt, sample=sample)
    return rank_hard_tokens(totals, info, min_count=min_count, limit=limit)
