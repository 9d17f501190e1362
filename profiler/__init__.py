"""sftmix profiler: from an SFT dataset to a DuckDB confidence table."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # The table API is imported on first use, so the scorer and fine-tuning import without duckdb and polars.
    if name in ("ConfidenceTable", "open_table"):
        from profiler import table

        return getattr(table, name)
    raise AttributeError(f"module 'profiler' has no attribute {name!r}")


def profile(**kwargs):
    """Fine-tune a reference model, score its checkpoints and write the confidence table.

    See :func:`profiler.pipeline.run.profile` (imported lazily: it pulls in transformers).
    """
    from profiler.pipeline import profile as _profile

    return _profile(**kwargs)


__all__ = ["ConfidenceTable", "__version__", "open_table", "profile"]
