"""The confidence table: one DuckDB file per profiling run, with one writer and one reader.

Only this package holds SQL over the schema (the dashboard queries the read views it defines). Importing it loads
neither torch nor transformers.
"""

from profiler.table.reader import ConfidenceTable, open_table
from profiler.table.schema import SCHEMA_VERSION, VIEWS
from profiler.table.writer import CheckpointInfo, ScoreLike, TableWriter, check_output_table

__all__ = [
    "SCHEMA_VERSION",
    "VIEWS",
    "CheckpointInfo",
    "ConfidenceTable",
    "ScoreLike",
    "TableWriter",
    "check_output_table",
    "open_table",
]
