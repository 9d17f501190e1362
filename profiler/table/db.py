"""DuckDB helpers shared by the table's writer and reader."""

from __future__ import annotations

import warnings

import duckdb
import polars as pl


def fetch_frame(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> pl.DataFrame:
    """Run a parameterized query and return all of its rows as a polars frame (types kept, also when empty)."""
    cursor = con.execute(query, params or [])
    with warnings.catch_warnings():
        # DuckDB suggests its relation API to save a copy, but that API takes no '?' parameters.
        warnings.simplefilter("ignore", UserWarning)
        return pl.from_arrow(cursor.to_arrow_table())
