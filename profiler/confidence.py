"""Confidence from training dynamics: Conf_i = -(1/C) sum_c Perp_c(Y_i | X_i), and the median split."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def compute_confidence(scores: pl.DataFrame, checkpoint_ids: Sequence[int], n_bins: int = 10) -> pl.DataFrame:
    """Confidence, mean NLL, variability, split and quantile bin for examples scored at every checkpoint.

    The split gives the ``n // 2`` most confident examples to ``confident`` and the rest to
    ``unconfident``, so sizes differ by at most one. Ties break by ``example_id``, so the split is
    deterministic. ``quantile_bin`` runs from 0 (least confident) to ``n_bins - 1``.

    Args:
        scores: rows of ``example_id, checkpoint_id, mean_nll, perplexity``.
        checkpoint_ids: the checkpoints that count; examples missing any of them are left out.
        n_bins: number of quantile bins.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    ids = list(checkpoint_ids)
    per = (
        scores.filter(pl.col("checkpoint_id").is_in(ids))
        .group_by("example_id")
        .agg(
            pl.col("perplexity").mean().alias("mean_ppl"),
            pl.col("perplexity").std(ddof=0).alias("variability"),
            pl.col("mean_nll").mean().alias("mean_nll"),
            pl.len().alias("n_checkpoints"),
        )
        .filter(pl.col("n_checkpoints") == len(ids))
        .with_columns((-pl.col("mean_ppl")).alias("confidence"))
        .sort(["confidence", "example_id"], descending=[True, False])
    )
    n = per.height
    rank = pl.int_range(0, n, dtype=pl.Int64)
    return per.with_columns(
        rank.alias("rank"),
        pl.when(rank < n // 2).then(pl.lit("confident")).otherwise(pl.lit("unconfident")).alias("split"),
        ((n - 1 - rank) * n_bins // max(n, 1)).cast(pl.Int32).alias("quantile_bin"),
    ).select("example_id", "confidence", "mean_nll", "variability", "split", "quantile_bin", "rank")
