"""Exported records: the original example's fields plus the confidence columns, from the reader's export rows.

Shared by ``sftmix export`` and the dashboard's download, so both write the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import polars as pl

# ``ifd`` last: rows that stop before it (an older query's) leave it out of the record.
CONF_COLUMNS = ("example_id", "source", "confidence", "mean_nll", "variability", "split", "quantile_bin", "ifd")


def rows_to_records(rows: Iterable[tuple]) -> list[dict]:
    """``(record JSON, *CONF_COLUMNS values)`` rows -> the original records with the confidence columns added.

    A confidence column whose name an original field already uses is renamed ``sftmix_<name>``.
    """
    records = []
    for rec_json, *conf in rows:
        rec = json.loads(rec_json)
        for name, value in zip(CONF_COLUMNS, conf):
            rec[f"sftmix_{name}" if name in rec else name] = value
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
