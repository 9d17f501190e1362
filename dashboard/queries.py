"""The dashboard's queries: pure functions over a reader's cursor, returning polars frames or dicts.

They query only the read views that :mod:`profiler.table.schema` defines (``example_view``, ``score_view``,
``token_view``, ``checkpoint_view``, ``meta_view``), which the reader creates on each cursor it hands out
(:meth:`profiler.table.ConfidenceTable.cursor`). Aggregation and sampling happen in DuckDB, so a page costs the
same for 1k or 1M examples. Every value a user types reaches DuckDB as a parameter, never as SQL text.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import duckdb
import polars as pl

from profiler.table.db import fetch_frame
from profiler.table.records import records_frame, rows_to_records, write_jsonl

SPLIT_NAMES = ("confident", "unconfident", "unscored")  # 'unscored': rows with no confidence (bad rows, say)
REGION_NAMES = ("easy-to-learn", "ambiguous", "hard-to-learn")  # cartography regions (profiler.confidence)

# The readable scales (perplexity is heavy-tailed: linear axes put almost every example in one bar or one dot).
# Confidence is minus the mean perplexity over checkpoints, so log10(-confidence) keeps its order (reversed): the
# median split stays one line, and the bulk of examples spreads out. Variability (std of perplexity) grows with
# perplexity, so the data map shows it relative to the mean perplexity, as the regions use it.
LOG_PPL = "log10(-confidence)"
REL_VAR = "variability / -confidence"

SORTABLE = ("rank", "confidence", "variability", "mean_nll", "ifd", "row_index", "n_response_tokens", "source")

# Tokens are grouped (hard tokens) and matched (the token filter) by their text with leading and trailing whitespace
# trimmed, so " the" and "the" are one token; a token of whitespace alone keeps it, shown visibly (see token_key).
_WS = "[ \\t\\n\\f\\r]"  # RE2 (DuckDB) and Python re read the same class: space, tab, newline, form feed, CR
_TRIM = f"^{_WS}+|{_WS}+$"
_VISIBLE = {"\n": "\u21b5", "\t": "\u21e5", " ": "\u2423", "\r": "\u240d", "\f": "\u240c"}  # ↵ ⇥ ␣ ␍ ␌


def token_key_sql(col: str) -> str:
    """SQL of :func:`token_key` over the column ``col`` (a column name chosen by code, never by the user)."""
    trimmed = f"regexp_replace({col}, '{_TRIM}', '', 'g')"
    visible = col
    for raw, shown in _VISIBLE.items():
        visible = f"replace({visible}, chr({ord(raw)}), '{shown}')"
    return f"(CASE WHEN {trimmed} <> '' THEN {trimmed} ELSE {visible} END)"


def token_key(token: str) -> str:
    """The grouping key of a token's text: trimmed of whitespace, or, for whitespace alone, that whitespace made
    visible (``"\\n"`` is ``"↵"``, ``" "`` is ``"␣"``). The same rule as :func:`token_key_sql`; ``""`` stays ``""``."""
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
    ``ids`` is a selection (from the semantic map, say); ``token`` keeps the examples whose response holds that
    token (a :func:`token_key`, chosen on the hard-tokens page): those holding one of ``token_texts``, the token
    texts of that key (:func:`token_texts`), at the last checkpoint with token scores.
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

    def where(self) -> tuple[str, list[Any]]:
        """A WHERE clause over ``example_view``'s columns and its parameters."""
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
            parts.append(
                "(contains(lower(coalesce(prompt, '')), lower(?)) OR contains(lower(coalesce(response, '')), lower(?))"
                " OR example_id = ?)"
            )
            params += [self.search, self.search, self.search]
        if self.ids is not None:
            parts.append("list_contains(?::VARCHAR[], example_id)")
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
        return " AND ".join(parts), params


def _scalar(con: duckdb.DuckDBPyConnection, q: str, params: list | None = None) -> Any:
    return con.execute(q, params or []).fetchone()[0]


def meta(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta_view").fetchall()}


def overview(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Counts for the overview page."""
    m = meta(con)
    examples, scored, confident, unconfident, embedded, lo, med, hi, n_ifd, ifd_lo, ifd_med, ifd_hi = con.execute(
        """
        SELECT count(*), count(confidence), count(*) FILTER (WHERE split = 'confident'),
               count(*) FILTER (WHERE split = 'unconfident'), count(umap_x), min(confidence), median(confidence),
               max(confidence), count(ifd), min(ifd), median(ifd), max(ifd)
        FROM example_view
        """
    ).fetchone()
    regions = dict(
        con.execute("SELECT region, count(*) FROM example_view WHERE region IS NOT NULL GROUP BY 1").fetchall()
    )
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


def status_counts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return fetch_frame(con, "SELECT status, count(*) AS examples FROM example_view GROUP BY 1 ORDER BY 2 DESC, 1")


def confidence_histogram(con: duckdb.DuckDBPyConnection, bins: int = 60) -> pl.DataFrame:
    """Counts of examples per (bin, split) of log10 mean perplexity (:data:`LOG_PPL`), binned in DuckDB.

    Columns ``lo``, ``hi`` (the bin's edges, in log10 perplexity), ``split``, ``count``. Equal widths on the log
    scale, from the lowest to the highest mean perplexity.
    """
    lo, hi = con.execute(f"SELECT min({LOG_PPL}), max({LOG_PPL}) FROM example_view").fetchone()
    if lo is None:
        return pl.DataFrame(schema={"lo": pl.Float64, "hi": pl.Float64, "split": pl.Utf8, "count": pl.Int64})
    width = (hi - lo) / bins if hi > lo else 1.0
    return fetch_frame(
        con,
        f"""
        SELECT ? + b * ? AS lo, ? + (b + 1) * ? AS hi, split, count(*) AS count
        FROM (SELECT least(CAST(floor(({LOG_PPL} - ?) / ?) AS BIGINT), ? - 1) AS b, split FROM example_view
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
    med = _scalar(con, "SELECT median(confidence) FROM example_view")
    bins = con.execute(
        f"SELECT min({LOG_PPL}), max({LOG_PPL}) FROM example_view WHERE quantile_bin IS NOT NULL "
        "GROUP BY quantile_bin ORDER BY 1"
    ).fetchall()
    edges = [(a_hi + b_lo) / 2 for (_, a_hi), (b_lo, _) in zip(bins, bins[1:])]
    amb_lo, rest_hi = con.execute(
        f"SELECT min({REL_VAR}) FILTER (WHERE region = 'ambiguous'), "
        f"max({REL_VAR}) FILTER (WHERE region <> 'ambiguous') FROM example_view"
    ).fetchone()
    ambiguous_from = None if amb_lo is None else (amb_lo if rest_hi is None else (amb_lo + rest_hi) / 2)
    return {
        "median_log_ppl": None if med is None else math.log10(-med),
        "bin_edges": edges,
        "ambiguous_from": ambiguous_from,
    }


def source_breakdown(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per source: examples, scored, split sizes, share confident, median confidence."""
    return fetch_frame(
        con,
        """
        SELECT source, count(*) AS examples, count(confidence) AS scored,
               count(*) FILTER (WHERE split = 'confident') AS confident,
               count(*) FILTER (WHERE split = 'unconfident') AS unconfident,
               round(count(*) FILTER (WHERE split = 'confident') / greatest(count(confidence), 1), 4)
                   AS share_confident,
               median(confidence) AS median_confidence
        FROM example_view
        GROUP BY 1 ORDER BY 1
        """,
    )


def distinct_values(con: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    """Distinct sources or statuses (``column`` is chosen by code from a fixed set, never by the user)."""
    if column not in ("source", "status"):
        raise ValueError(f"no distinct values for {column!r}")
    return [r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM example_view ORDER BY 1").fetchall()]


def count(con: duckdb.DuckDBPyConnection, flt: Filter) -> int:
    where, params = flt.where()
    return _scalar(con, f"SELECT count(*) FROM example_view WHERE {where}", params)


def sample_points(
    con: duckdb.DuckDBPyConnection, flt: Filter, *, cap: int, seed: int = 0, need_map: bool = False
) -> tuple[pl.DataFrame, int]:
    """At most ``cap`` filtered, scored examples for a scatter (a seeded hash sample in DuckDB) and the total.

    Returns columns for plotting and hovering, with the readable scales ``log_ppl`` (log10 mean perplexity) and
    ``rel_variability`` (variability / mean perplexity); ``prompt`` is cut to 200 characters.
    """
    where, params = flt.where()
    where += " AND confidence IS NOT NULL" + (" AND umap_x IS NOT NULL" if need_map else "")
    total = _scalar(con, f"SELECT count(*) FROM example_view WHERE {where}", params)
    frame = fetch_frame(
        con,
        f"""
        SELECT example_id, source, split, region, confidence, variability, mean_nll, quantile_bin, umap_x, umap_y,
               ifd, {LOG_PPL} AS log_ppl, {REL_VAR} AS rel_variability, left(coalesce(prompt, ''), 200) AS prompt
        FROM example_view WHERE {where}
        ORDER BY hash(example_id, ?) LIMIT ?
        """,
        [*params, seed, cap],
    )
    return frame, total


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
    where, params = flt.where()
    total = _scalar(con, f"SELECT count(*) FROM example_view WHERE {where}", params)
    frame = fetch_frame(
        con,
        f"""
        SELECT example_id, source, split, region, confidence, variability, mean_nll, ifd, rank, status,
               {_clipped("prompt", EXPLORE_CHARS)} AS prompt, {_clipped("response", EXPLORE_CHARS)} AS response
        FROM example_view WHERE {where}
        ORDER BY {sort} {"DESC" if descending else "ASC"} NULLS LAST, example_id LIMIT ? OFFSET ?
        """,
        [*params, int(limit), int(offset)],
    )
    return frame, total


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
    return fetch_frame(
        con,
        """
        SELECT quantile_bin, checkpoint_id, step, fraction, count(*) AS examples,
               median(perplexity) AS median_ppl, quantile_cont(perplexity, 0.25) AS q25,
               quantile_cont(perplexity, 0.75) AS q75
        FROM score_view WHERE quantile_bin IS NOT NULL
        GROUP BY ALL ORDER BY 1, 2
        """,
    )


def export_rows(con: duckdb.DuckDBPyConnection, flt: Filter, split: str) -> list[tuple]:
    """(record JSON, confidence columns..., ifd) of the filtered examples of ``split``, most confident first."""
    if split not in ("confident", "unconfident"):
        raise ValueError(f"export a confident or unconfident split, not {split!r}")
    where, params = flt.where()
    return con.execute(
        f"""
        SELECT record, example_id, source, confidence, mean_nll, variability, split, quantile_bin, ifd
        FROM example_view WHERE {where} AND split = ?
        ORDER BY rank
        """,
        [*params, split],
    ).fetchall()


def export_file(con: duckdb.DuckDBPyConnection, flt: Filter, split: str, fmt: str) -> tuple[bytes, int]:
    """The filtered examples of ``split`` as a JSONL or Parquet file (original fields + confidence columns)."""
    records = rows_to_records(export_rows(con, flt, split))
    if fmt == "jsonl":
        buf = io.StringIO()
        write_jsonl(records, buf)
        return buf.getvalue().encode("utf-8"), len(records)
    if fmt == "parquet":
        out = io.BytesIO()
        records_frame(records).write_parquet(out)
        return out.getvalue(), len(records)
    raise ValueError(f"export format must be jsonl or parquet, got {fmt!r}")


# --- token scores (schema 1.1: token_view) --------------------------------------------------------------------
def token_checkpoints(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The checkpoints that have token scores (``checkpoint_id``, ``step``, ``fraction``, ``examples``), in order;
    empty where the profile stored none (``--token-scores none``, or a file written before them)."""
    return fetch_frame(
        con,
        "SELECT checkpoint_id, step, fraction, count(*) AS examples FROM token_view GROUP BY ALL ORDER BY 1",
    )


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


def hard_tokens(
    con: duckdb.DuckDBPyConnection, flt: Filter | None = None, *, min_count: int = 5, limit: int = 100
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The tokens with the highest mean NLL at the last checkpoint with token scores, over the examples of ``flt``
    (its ``token`` ignored), aggregated in DuckDB.

    Each example's ``nll`` and ``tokens`` lists are unnested together (element k of one with element k of the
    other: the same token) and grouped by :func:`token_key` (whitespace-trimmed text). Tokens seen fewer than
    ``min_count`` times are left out (a rare token's mean is noise).

    Returns:
        The frame ``token`` (the key), ``mean_nll``, ``count`` (occurrences), ``examples`` (holding it),
        ``share_nll`` (its share of all the NLL counted), highest mean first (ties by token), at most ``limit``
        rows; and a summary: ``checkpoint_id``, ``step``, ``fraction`` of that checkpoint (None without token
        scores), ``examples`` and ``tokens`` counted, ``distinct`` tokens, ``kept`` (those with ``min_count``).
    """
    flt = Filter() if flt is None else flt
    where, params = replace(flt, token="").where()
    scope = "" if where == "TRUE" else f" AND example_id IN (SELECT example_id FROM example_view WHERE {where})"
    cp = con.execute(
        f"SELECT checkpoint_id, step, fraction FROM checkpoint_view WHERE checkpoint_id = {_last_token_checkpoint()}"
    ).fetchone()
    summary: dict[str, Any] = dict(zip(("checkpoint_id", "step", "fraction"), cp or (None, None, None)))
    try:
        # The key of each distinct token text, computed once per text and materialized (string functions on every
        # occurrence would cost seconds on a large profile); then occurrences and NLL sum per (key, example).
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _token_keys AS
            SELECT tok, {token_key_sql("tok")} AS token
            FROM (SELECT DISTINCT unnest(tokens) AS tok FROM token_view WHERE checkpoint_id = ?)
            """,
            [summary["checkpoint_id"]],
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _hard_tokens AS
            WITH occurrences AS (
                SELECT example_id, unnest(tokens) AS tok, unnest(nll) AS nll FROM token_view
                WHERE checkpoint_id = ?{scope}
            ),
            per_text AS (SELECT tok, example_id, count(*) AS n, sum(nll) AS s FROM occurrences GROUP BY ALL)
            SELECT k.token, p.example_id, sum(p.n)::BIGINT AS n, sum(p.s) AS s
            FROM per_text p JOIN _token_keys k USING (tok) WHERE k.token <> ''
            GROUP BY ALL
            """,
            [summary["checkpoint_id"], *params],
        )
        n_examples, n_tokens, total, distinct, kept = con.execute(
            """
            SELECT count(DISTINCT example_id), coalesce(sum(n), 0)::BIGINT, sum(s), count(DISTINCT token),
                   (SELECT count(*) FROM (SELECT token FROM _hard_tokens GROUP BY token HAVING sum(n) >= ?))
            FROM _hard_tokens
            """,
            [int(min_count)],
        ).fetchone()
        frame = fetch_frame(
            con,
            """
            SELECT token, sum(s) / sum(n) AS mean_nll, sum(n)::BIGINT AS count, count(*) AS examples,
                   sum(s) / ? AS share_nll
            FROM _hard_tokens GROUP BY token HAVING sum(n) >= ?
            ORDER BY mean_nll DESC, token LIMIT ?
            """,
            [total or 1.0, int(min_count), int(limit)],
        )
    finally:
        con.execute("DROP TABLE IF EXISTS _hard_tokens; DROP TABLE IF EXISTS _token_keys")
    summary.update(examples=n_examples, tokens=n_tokens, distinct=distinct, kept=kept)
    return frame, summary
