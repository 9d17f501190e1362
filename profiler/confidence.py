"""Confidence from training dynamics: Conf_i = -(1/C) sum_c Perp_c(Y_i | X_i), the median split, and the
dataset-cartography regions.

Regions (Swayamdipta et al., 2020, "Dataset Cartography"): examples the reference learns early and keeps
(*easy-to-learn*: high confidence, low variability), examples whose loss moves a lot across checkpoints
(*ambiguous*: high variability), and examples it never learns (*hard-to-learn*: low confidence, low variability).
Cartography measures variability on a probability, which is bounded; the standard deviation of a perplexity grows
with the perplexity itself (on real profiles the two correlate above 0.9 on log scales), so raw variability would
only re-rank by confidence. The regions therefore use the **relative variability** ``variability / mean
perplexity`` (the coefficient of variation over checkpoints, scale-free like cartography's), with these
quantiles, which partition the scored examples:

* ``ambiguous``: the third with the highest relative variability (the top 1/3 quantile; ``n // 3`` examples,
  ties broken by ``example_id``);
* ``easy-to-learn``: the others in the ``confident`` half (above the median split);
* ``hard-to-learn``: the others in the ``unconfident`` half.

On the data map these are axis-aligned: one vertical line at the relative-variability tercile, and the median
split, one horizontal line. :data:`profiler.table.schema.REGION_SQL` computes the same regions for tables written
before the ``region`` column existed.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from profiler.table.schema import AMBIGUOUS, CONFIDENT, EASY, HARD, REGIONS, UNCONFIDENT

__all__ = ["REGIONS", "compute_confidence"]


def compute_confidence(scores: pl.DataFrame, checkpoint_ids: Sequence[int], n_bins: int = 10) -> pl.DataFrame:
    """Confidence, mean NLL, variability, split, quantile bin and region for examples scored at every checkpoint.

    The split gives the ``n // 2`` most confident examples to ``confident`` and the rest to
    ``unconfident``, so sizes differ by at most one. Ties break by ``example_id``, so the split is
    deterministic. ``quantile_bin`` runs from 0 (least confident) to ``n_bins - 1``. ``region`` is one of
    :data:`REGIONS` (see the module's docstring).

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
    per = per.with_columns(
        rank.alias("rank"),
        pl.when(rank < n // 2).then(pl.lit(CONFIDENT)).otherwise(pl.lit(UNCONFIDENT)).alias("split"),
        ((n - 1 - rank) * n_bins // max(n, 1)).cast(pl.Int32).alias("quantile_bin"),
    )
    # Divide by -confidence (not mean_ppl) so the float is the one REGION_SQL computes from the stored columns.
    relative = per.select("example_id", (pl.col("variability") / -pl.col("confidence")).alias("relative"))
    ambiguous = relative.sort(["relative", "example_id"], descending=[True, False]).head(n // 3)["example_id"]
    region = (
        pl.when(pl.col("example_id").is_in(ambiguous.to_list()))
        .then(pl.lit(AMBIGUOUS))
        .when(pl.col("split") == CONFIDENT)
        .then(pl.lit(EASY))
        .otherwise(pl.lit(HARD))
    )
    return per.with_columns(region.alias("region")).select(
        "example_id", "confidence", "mean_nll", "variability", "split", "quantile_bin", "rank", "region"
    )
