"""Reading a confidence table: read-only, as polars frames, export rows, and cursors over the read views."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from profiler.errors import TableError
from profiler.table.db import connect, fetch_frame, file_kind, stored_schema_version, table_names
from profiler.table.records import export_batches
from profiler.table.schema import SPLITS, check_version, has_region_column, missing_tables, view_ddl

EXPORT_SPLITS = (*SPLITS, "all")


class ConfidenceTable:
    """A read-only view of one profiling run. Frames load on first access.

    Attributes:
        path: the DuckDB file.
        meta: the run's ``meta`` (JSON values decoded).
        con: a read-only DuckDB connection, for custom queries (use parameters, never string formatting). It
            also has the read views of :data:`profiler.table.schema.VIEWS`, as has every :meth:`cursor`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        kind = file_kind(self.path)
        if kind in ("missing", "directory", "other"):
            raise TableError(f"no confidence table at {self.path}")
        if kind in ("empty", "foreign"):
            what = "an empty file" if kind == "empty" else "not a DuckDB file"
            raise TableError(f"{self.path} is {what}, so not an sftmix confidence table")
        self.con = connect(self.path, read_only=True, writing=False)
        try:
            tables = table_names(self.con)
            if stored_schema_version(self.con, tables) is None:
                raise TableError(
                    f"{self.path} is a DuckDB database that is not an sftmix confidence table "
                    f"(tables: {', '.join(tables) or 'none'})"
                )
            rows = self.con.execute("SELECT key, value FROM meta").fetchall()
            self.meta: dict[str, Any] = {k: json.loads(v) for k, v in rows}
            check_version(self.meta.get("schema_version"), str(self.path))
            self._has_region = has_region_column(self.con)  # an older file: the views compute the region
            self._missing = missing_tables(self.con)  # a file before 1.1: empty stand-ins for its new tables
            self.con.execute(self._view_ddl())
        except BaseException:
            self.con.close()
            raise

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new read-only cursor with the read views: one per thread (a DuckDB connection is not thread-safe)."""
        cur = self.con.cursor()
        cur.execute(self._view_ddl())  # temporary views belong to one connection
        return cur

    def _view_ddl(self) -> str:
        return view_ddl(self._has_region, self._missing)

    def frame(self, query: str, params: list | None = None) -> pl.DataFrame:
        """Run a read-only query and return a polars frame."""
        return fetch_frame(self.con, query, params)

    @cached_property
    def examples(self) -> pl.DataFrame:
        return self.frame("SELECT * FROM examples ORDER BY row_index")

    @cached_property
    def checkpoints(self) -> pl.DataFrame:
        return self.frame("SELECT * FROM checkpoints ORDER BY checkpoint_id")

    @cached_property
    def scores(self) -> pl.DataFrame:
        return self.frame("SELECT * FROM scores ORDER BY example_id, checkpoint_id")

    @cached_property
    def confidence(self) -> pl.DataFrame:
        return self.frame("SELECT * FROM confidence_view ORDER BY rank")  # with the region, also of an older file

    @cached_property
    def embeddings(self) -> pl.DataFrame:
        return self.frame("SELECT * FROM embeddings ORDER BY example_id")

    @cached_property
    def ifd(self) -> pl.DataFrame:
        """One row per example with an IFD (empty in files written before 1.1)."""
        return self.frame("SELECT * FROM ifd ORDER BY example_id")

    def token_scores(self, example_id: str | None = None) -> pl.DataFrame:
        """``token_view`` rows (``example_id``, ``checkpoint_id``, ``step``, ``fraction``, ``nll``, ``tokens``) of
        one example, or of all; empty where no token scores were stored."""
        where, params = ("WHERE example_id = ? ", [example_id]) if example_id is not None else ("", [])
        return self.frame(f"SELECT * FROM token_view {where}ORDER BY example_id, checkpoint_id", params)

    def split_examples(self) -> pl.DataFrame:
        """The examples that have a split, in input order: ``example_id``, ``messages`` and ``record`` (JSON text),
        ``split`` (``confident`` or ``unconfident``). Empty until the confidence stage has run."""
        return self.frame(
            "SELECT e.example_id, e.messages, e.record, c.split FROM confidence c "
            "JOIN examples e USING (example_id) ORDER BY e.row_index"
        )

    def split_batches(self, rows: int = 10_000):
        """:meth:`split_examples` without ``record``, as Arrow record batches streamed from DuckDB (a million
        examples never sit in memory at once): ``example_id``, ``messages``, ``split``."""
        sql = (
            "SELECT e.example_id, e.messages, c.split FROM confidence c "
            "JOIN examples e USING (example_id) ORDER BY e.row_index"
        )
        return self.con.cursor().sql(sql).to_arrow_reader(rows)

    def split_digest(self) -> str:
        """A hash of every split example's id and split, in input order: what a training set rendered from this
        table depends on (an id is a hash of the example's messages)."""
        row = self.con.execute(
            "SELECT sha256(coalesce(string_agg(e.example_id || ':' || c.split, ',' ORDER BY e.row_index), '')) "
            "FROM confidence c JOIN examples e USING (example_id)"
        ).fetchone()
        return row[0]

    def scored_examples(self) -> pl.DataFrame:
        """The examples that have a confidence, most confident first: ``example_id``, ``confidence``, ``rank``,
        ``split``, ``prompt``."""
        return self.frame(
            "SELECT c.example_id, c.confidence, c.rank, c.split, e.prompt FROM confidence c "
            "JOIN examples e USING (example_id) ORDER BY c.rank"
        )

    def export_records(self, split: str = "all") -> list[dict]:
        """The scored examples of ``split`` (``all``: both halves), most confident first, as their original records
        with the confidence columns (:func:`profiler.table.records.export_batches`, joined)."""
        return [rec for batch in self.export_batches(split) for rec in batch]

    def export_batches(self, split: str = "all", batch_rows: int | None = None) -> Iterator[list[dict]]:
        """:meth:`export_records` in batches of ``batch_rows``, read while the table is open (an export of a
        million examples holds one batch of Python records at a time)."""
        if split not in EXPORT_SPLITS:
            raise ValueError(f"split must be one of {EXPORT_SPLITS}, got {split!r}")
        where, params = ("true", []) if split == "all" else ("split = ?", [split])
        return export_batches(self.cursor(), where, params, batch_rows)

    def summary(self) -> dict[str, Any]:
        """Counts by status, source and split, checkpoints, token score rows, confidence (and mean perplexity)
        range and median, and IFD."""
        q = self.con.execute
        out: dict[str, Any] = {
            "path": str(self.path),
            "schema_version": self.meta.get("schema_version"),
            "sftmix_version": self.meta.get("sftmix_version"),
            "created_at": self.meta.get("created_at"),
            "reference_model": self.meta.get("reference_model"),
            "template": self.meta.get("template"),
            "examples": q("SELECT count(*) FROM examples").fetchone()[0],
            "status": dict(q("SELECT status, count(*) FROM examples GROUP BY 1 ORDER BY 2 DESC").fetchall()),
            "sources": dict(q("SELECT source, count(*) FROM examples GROUP BY 1 ORDER BY 1").fetchall()),
            "checkpoints": q("SELECT count(*) FROM checkpoints").fetchone()[0],
            "scores": q("SELECT count(*) FROM scores").fetchone()[0],
            "stage_seconds": self.meta.get("stage_seconds"),
            "splits": dict(q("SELECT split, count(*) FROM confidence GROUP BY 1 ORDER BY 1").fetchall()),
            "token_scores": q("SELECT count(*) FROM token_scores").fetchone()[0],
        }
        lo, med, hi = q("SELECT min(confidence), median(confidence), max(confidence) FROM confidence").fetchone()
        out["confidence"] = {"min": lo, "median": med, "max": hi}
        # The same on the scale the dashboard shows: the mean perplexity over checkpoints (minus the confidence).
        out["perplexity"] = {"min": _neg(hi), "median": _neg(med), "max": _neg(lo)}
        n_ifd, ifd_median = q("SELECT count(*), median(ifd) FROM ifd").fetchone()
        out["ifd"] = {"examples": n_ifd, "median": ifd_median}
        return out

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> ConfidenceTable:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _neg(x: float | None) -> float | None:
    return None if x is None else -x


def open_table(path: str | Path) -> ConfidenceTable:
    """Open a confidence table read-only."""
    return ConfidenceTable(path)
