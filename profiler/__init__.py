"""sftmix profiler: from an SFT dataset to a DuckDB confidence table."""

__version__ = "0.1.0"

from profiler.table import ConfidenceTable, open_table  # noqa: E402


def profile(**kwargs):
    """Fine-tune a reference model, score its checkpoints and write the confidence table.

    See :func:`profiler.profile_run.profile` (imported lazily: it pulls in transformers).
    """
    from profiler.profile_run import profile as _profile

    return _profile(**kwargs)


__all__ = ["ConfidenceTable", "__version__", "open_table", "profile"]
