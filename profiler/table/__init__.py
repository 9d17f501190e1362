"""The confidence table: one DuckDB file per profiling run, with one writer and one reader."""

from profiler.table.reader import ConfidenceTable, open_table
from profiler.table.schema import SCHEMA_VERSION
from profiler.table.writer import TableWriter

__all__ = ["SCHEMA_VERSION", "ConfidenceTable", "TableWriter", "open_table"]
