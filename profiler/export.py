"""Exporting splits: the original example fields plus the confidence columns, as JSONL, Parquet or a HF dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl

from profiler.table.reader import open_table

SPLITS = ("confident", "unconfident", "all")
EXPORT_FORMATS = ("jsonl", "parquet", "hf")
CONF_COLUMNS = ("example_id", "source", "confidence", "mean_nll", "variability", "split", "quantile_bin")


def split_records(table_path: str | Path, split: str = "all") -> list[dict]:
    """The scored examples of a split (``all``: both halves), most confident first, with their original fields.

    A confidence column whose name an original field already uses is renamed ``sftmix_<name>``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with open_table(table_path) as t:
        q = (
            "SELECT e.record, e.example_id, e.source, c.confidence, c.mean_nll, c.variability, c.split, c.quantile_bin "
            "FROM confidence c JOIN examples e USING (example_id) "
            + ("" if split == "all" else "WHERE c.split = ? ")
            + "ORDER BY c.rank"
        )
        rows = t.con.execute(q, [] if split == "all" else [split]).fetchall()
    return rows_to_records(rows)


def rows_to_records(rows) -> list[dict]:
    """``(record JSON, *CONF_COLUMNS values)`` rows -> the original records with the confidence columns added."""
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


def split_frame(table_path: str | Path, split: str = "all") -> pl.DataFrame:
    """:func:`split_records` as a polars frame."""
    return records_frame(split_records(table_path, split))


def write_jsonl(records: list[dict], f) -> None:
    """Record by record, so each example keeps exactly its own fields (sources may differ in format)."""
    for rec in records:
        f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")


def export_split(table_path: str | Path, out: str | Path, *, split: str = "all", fmt: str = "jsonl") -> int:
    """Write a split to ``out`` and return the number of examples written."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        records = split_records(table_path, split)
        with out.open("w", encoding="utf-8") as f:
            write_jsonl(records, f)
        return len(records)
    frame = split_frame(table_path, split)
    if fmt == "parquet":
        frame.write_parquet(out)
    else:
        from datasets import Dataset

        if out.exists():
            shutil.rmtree(out)
        Dataset.from_polars(frame).save_to_disk(str(out))
    return frame.height
