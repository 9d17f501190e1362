"""Comparing two profiles of the same data (say a weak and a strong reference model).

Examples are matched by id (a content hash, so the same data profiled twice matches whatever the row order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from scipy import stats

from profiler.errors import TableError
from profiler.table.reader import open_table
from profiler.table.schema import CONFIDENT, SPLITS, UNCONFIDENT


@dataclass
class Comparison:
    """Agreement of two profiles.

    Attributes:
        joined: one row per common scored example: ``example_id``, ``confidence_a/b``, ``rank_a/b``,
            ``split_a/b``, ``prompt``.
        agreement: ``{split_a: {split_b: count}}``.
        flips: the examples whose split differs, largest rank change first.
    """

    a: str
    b: str
    n_a: int
    n_b: int
    same_data: bool
    joined: pl.DataFrame = field(repr=False)
    spearman: float
    kendall: float
    agreement: dict[str, dict[str, int]]
    flips: pl.DataFrame = field(repr=False)

    @property
    def n_common(self) -> int:
        return self.joined.height

    @property
    def agreement_rate(self) -> float:
        same = sum(self.agreement[s][s] for s in SPLITS)
        return same / self.n_common if self.n_common else float("nan")

    def to_dict(self, n_flips: int = 20) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "examples_a": self.n_a,
            "examples_b": self.n_b,
            "common": self.n_common,
            "same_data": self.same_data,
            "spearman": self.spearman,
            "kendall": self.kendall,
            "agreement": self.agreement,
            "agreement_rate": self.agreement_rate,
            "n_flips": self.flips.height,
            "flips": self.flips.head(n_flips).to_dicts(),
        }

    def text(self, n_flips: int = 10) -> str:
        lines = [
            f"A {self.a}: {self.n_a} scored examples",
            f"B {self.b}: {self.n_b} scored examples",
            f"common          {self.n_common}" + ("" if self.same_data else "  (the datasets differ: common ids only)"),
            f"spearman        {self.spearman:.4f}",
            f"kendall tau-b   {self.kendall:.4f}",
            f"split agreement {self.agreement_rate:.2%}",
            f"{'':16}{'B confident':>14}{'B unconfident':>15}",
        ]
        for s in SPLITS:
            lines.append(f"{'A ' + s:16}{self.agreement[s][CONFIDENT]:>14}{self.agreement[s][UNCONFIDENT]:>15}")
        lines.append(f"flips           {self.flips.height} (largest rank change first)")
        for r in self.flips.head(n_flips).iter_rows(named=True):
            lines.append(
                f"  {r['example_id'][:16]:16} {r['split_a']:>11} -> {r['split_b']:<11} "
                f"rank {r['rank_a']} -> {r['rank_b']}  {(r['prompt'] or '')[:60]!r}"
            )
        return "\n".join(lines)


def _scored(path: str | Path) -> tuple[pl.DataFrame, str | None]:
    with open_table(path) as t:
        return t.scored_examples(), t.meta.get("dataset_fingerprint")


def compare_tables(a: str | Path, b: str | Path) -> Comparison:
    """Correlations of confidence, the split agreement matrix and the flipped examples of two profiles."""
    fa, fp_a = _scored(a)
    fb, fp_b = _scored(b)
    for path, frame in ((a, fa), (b, fb)):
        if frame.is_empty():
            raise TableError(f"{path} has no confidence yet; finish its profile first")
    joined = (
        fa.rename({"confidence": "confidence_a", "rank": "rank_a", "split": "split_a"})
        .join(
            fb.drop("prompt").rename({"confidence": "confidence_b", "rank": "rank_b", "split": "split_b"}),
            on="example_id",
        )
        .sort("rank_a")
    )
    if joined.height < 2:
        raise TableError(f"{a} and {b} share {joined.height} scored example(s); compare two profiles of the same data")
    spearman = float(stats.spearmanr(joined["confidence_a"], joined["confidence_b"]).statistic)
    kendall = float(stats.kendalltau(joined["confidence_a"], joined["confidence_b"]).statistic)
    counts = {(sa, sb): n for sa, sb, n in joined.group_by("split_a", "split_b").len().iter_rows()}
    agreement = {sa: {sb: counts.get((sa, sb), 0) for sb in SPLITS} for sa in SPLITS}
    flips = (
        joined.filter(pl.col("split_a") != pl.col("split_b"))
        .with_columns((pl.col("rank_b") - pl.col("rank_a")).abs().alias("rank_change"))
        .sort(["rank_change", "example_id"], descending=[True, False])
    )
    return Comparison(
        a=str(a),
        b=str(b),
        n_a=fa.height,
        n_b=fb.height,
        same_data=fp_a is not None and fp_a == fp_b,
        joined=joined,
        spearman=spearman,
        kendall=kendall,
        agreement=agreement,
        flips=flips,
    )
