"""Exported records: the original example's fields plus the confidence columns, read by name from ``example_view``.

One query (:func:`export_records`) serves ``sftmix export`` (through the reader) and the dashboard's download
(with its filter as the condition), so both write the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from profiler.table.schema import SPLITS

# The confidence columns each exported record gains, in this order: columns of ``example_view``, read by name.
CONF_COLUMNS = ("example_id", "source", "confidence", "mean_nll", "variability", "split", "quantile_bin", "ifd")


def export_records(con, where: str = "true", params: Sequence[Any] = ()) -> list[dict]:
    """The scored examples of ``con``'s read views that meet ``where`` (SQL over ``example_view``'s columns, with
    ``params`` for its ``?``), most confident first, as the original records with :data:`CONF_COLUMNS` added.

    A confidence column whose name an original field already uses is renamed ``sftmix_<name>``. ``ifd`` is None
    where the example has none.
    """
    scored = ", ".join(f"'{s}'" for s in SPLITS)
    cur = con.execute(
        f"SELECT record, {', '.join(CONF_COLUMNS)} FROM example_view "
        f"WHERE split IN ({scored}) AND ({where}) ORDER BY rank",
        list(params),
    )
    names = [d[0] for d in cur.description]
    records = []
    for row in cur.fetchall():
        values = dict(zip(names, row))
        rec = json.loads(values.pop("record"))
        for name in CONF_COLUMNS:
            rec[f"sftmix_{name}" if name in rec else name] = values[name]
        records.append(rec)
    return records


def records_frame(records: list[dict]) -> pl.DataFrame:
    """Records as a polars frame (columns missing from some records are null there)."""
    if not records:
        return pl.DataFrame({c: [] for c in CONF_COLUMNS})
    return pl.DataFrame(records, infer_schema_length=None)


def write_jsonl(records: Iterable[dict], f) -> None:
    """Record by record, so each example keeps exactly its own fields (sources may differ in format)."""
    for rec in records:
        f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
