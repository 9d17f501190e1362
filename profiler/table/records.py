"""Exported records: the original example's fields plus the confidence columns, read by name from ``example_view``.

One query (:func:`export_batches`) serves ``sftmix export`` (through the reader) and the dashboard's download
(with its filter as the condition), so both write the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import polars as pl

from profiler.table.schema import SPLITS

# The confidence columns each exported record gains, in this order: columns of ``example_view``, read by name.
CONF_COLUMNS = ("example_id", "source", "confidence", "mean_nll", "variability", "split", "quantile_bin", "ifd")


EXPORT_BATCH_ROWS = 10_000  # records per batch: what an export holds as Python objects at a time


def export_batches(
    con, where: str = "true", params: Sequence[Any] = (), batch_rows: int | None = None
) -> Iterator[list[dict]]:
    """The scored examples of ``con``'s read views that meet ``where`` (SQL over ``example_view``'s columns, with
    ``params`` for its ``?``), most confident first, as the original records with :data:`CONF_COLUMNS` added, in
    batches of ``batch_rows`` (default :data:`EXPORT_BATCH_ROWS`), so that a million-example export never holds a
    million Python records.

    A confidence column whose name an original field already uses is renamed ``sftmix_<name>``. ``ifd`` is None
    where the example has none. ``con`` must stay open while the batches are read.
    """
    scored = ", ".join(f"'{s}'" for s in SPLITS)
    cur = con.execute(
        f"SELECT record, {', '.join(CONF_COLUMNS)} FROM example_view "
        f"WHERE split IN ({scored}) AND ({where}) ORDER BY rank",
        list(params),
    )
    names = [d[0] for d in cur.description]
    while rows := cur.fetchmany(batch_rows or EXPORT_BATCH_ROWS):
        batch = []
        for row in rows:
            values = dict(zip(names, row))
            rec = json.loads(values.pop("record"))
            for name in CONF_COLUMNS:
                rec[f"sftmix_{name}" if name in rec else name] = values[name]
            batch.append(rec)
        yield batch


def records_frame(records: list[dict]) -> pl.DataFrame:
    """Records as a polars frame (columns missing from some records are null there)."""
    return batches_frame([records])


def batches_frame(batches: Iterable[list[dict]]) -> pl.DataFrame:
    """Batches of records as one polars frame (Arrow memory, not Python objects): columns in order of first
    appearance, null where a record lacks one, each column's type the common one of its values."""
    frames = [pl.DataFrame(b, infer_schema_length=None) for b in batches if b]
    if not frames:
        return pl.DataFrame({c: [] for c in CONF_COLUMNS})
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def write_jsonl(records: Iterable[dict], f) -> None:
    """Record by record, so each example keeps exactly its own fields (sources may differ in format)."""
    for rec in records:
        f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
