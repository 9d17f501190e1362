"""Reading a confidence table: read-only, as polars frames."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from profiler.errors import TableError
from profiler.table.db import fetch_frame
from profiler.table.schema import check_version


class ConfidenceTable:
    """A read-only view of one profiling run. Frames load on first access.

    Attributes:
        path: the DuckDB file.
        con: a read-only DuckDB connection, for custom queries (use parameters, never string formatting).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise TableError(f"no confidence table at {self.path}")
        try:
            self.con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as e:
            raise TableError(f"cannot open {self.path} as a DuckDB file: {e}") from e
        try:
            rows = self.con.execute("SELECT key, value FROM meta").fetchall()
        except duckdb.Error as e:
            raise TableError(f"{self.path} is not an sftmix confidence table: {e}") from e
        self.meta: dict[str, Any] = {k: json.loads(v) for k, v in rows}
        check_version(self.meta.get("schema_version"), str(self.path))

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
        return self.frame("SELECT * FROM confidence ORDER BY rank")

    @cached_property
    def embeddings(self) -> pl.DataFrame:
        return self.frame("SELECT * FROM embeddings ORDER BY example_id")

    def summary(self) -> dict[str, Any]:
        """Counts by status, source and split, checkpoints and confidence range."""
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
        }
        lo, med, hi = q("SELECT min(confidence), median(confidence), max(confidence) FROM confidence").fetchone()
        out["confidence"] = {"min": lo, "median": med, "max": hi}
        return out

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> ConfidenceTable:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_table(path: str | Path) -> ConfidenceTable:
    """Open a confidence table read-only."""
    return ConfidenceTable(path)
