"""sftmix profiler: from an SFT dataset to a DuckDB confidence table."""

__version__ = "0.1.0"

from profiler.table import ConfidenceTable, open_table  # noqa: E402

__all__ = ["ConfidenceTable", "__version__", "open_table"]
