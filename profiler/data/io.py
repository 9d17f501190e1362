"""Reading raw rows from JSONL/JSON/Parquet/CSV files, saved `datasets` directories or hub datasets.

Every row of the input comes out as a :class:`RawRow`, including rows that cannot be parsed (they
carry the error instead of a record), so that nothing is lost silently downstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.errors import DataError

FILE_KINDS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}


@dataclass
class RawRow:
    """One input row: a parsed record, or the error that kept it from being parsed."""

    source_file: str
    row: int
    record: dict[str, Any] | None
    error: DataError | None = None
    line: int | None = None
    raw_text: str | None = None


def _file_kind(path: Path) -> str:
    if path.is_dir():
        return "hf_disk"
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            str(path),
            f"unknown file type '{path.suffix}'; expected one of {sorted(FILE_KINDS)} or a datasets directory",
        )
    return kind


def read_rows(path: str | Path, *, split: str = "train", parse_jsonl: bool = True) -> Iterator[RawRow]:
    """Yield every row of a data file, directory or hub dataset.

    Args:
        path: a local file, a directory written by ``Dataset.save_to_disk``, or a hub dataset name.
        split: the split to use when the dataset has several.
        parse_jsonl: parse each JSONL line here; without it a line comes as ``raw_text`` with no record (the data
            stage parses lines in its worker processes, :func:`parse_jsonl_line`).

    Raises:
        DataError: when the input cannot be opened at all or has no rows.
    """
    p = Path(path)
    if not p.exists():
        yield from _read_hub(str(path), split)
        return
    kind = _file_kind(p)
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(str(p), "the file is empty", code="empty_file")
    if kind == "jsonl":
        rows = _read_jsonl(p, parse_jsonl)
    else:
        reader = {"json": _read_json, "parquet": _read_table, "csv": _read_table}.get(kind)
        rows = reader(p) if reader else _read_hf_disk(p, split)
    n = 0
    for n, row in enumerate(rows, start=1):  # noqa: B007 - n counts rows for the empty check
        yield row
    if n == 0:
        raise DataError(str(p), "the file has no rows", code="empty_file")


def _read_jsonl(path: Path, parse: bool = True) -> Iterator[RawRow]:
    row = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            error = None
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line = raw.decode("utf-8", errors="replace")
                error = DataError(str(path), f"not UTF-8 text (byte {e.start})", code="not_utf8", row=row, line=line_no)
            if not line.strip():
                continue  # blank lines are not rows
            text = line.rstrip("\n")
            if error is not None or not parse:
                yield RawRow(str(path), row, None, error, line=line_no, raw_text=text)
            else:
                yield parse_jsonl_line(str(path), row, line_no, text)
            row += 1


def parse_jsonl_line(source_file: str, row: int, line_no: int, text: str) -> RawRow:
    """One JSONL line as a row: its record, or the error that kept it from being one (malformed, not an object)."""
    error, record = None, None
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            record = obj
        else:
            error = DataError(source_file, f"expected a JSON object, got {type(obj).__name__}", code="not_an_object")
    except json.JSONDecodeError as e:
        error = DataError(source_file, f"malformed JSON: {e.msg} at column {e.colno}", code="malformed_json")
    if error is not None:
        error.row, error.line = row, line_no
        error.args = (error.describe(),)
    return RawRow(source_file, row, record, error, line=line_no, raw_text=text)


def _read_json(path: Path) -> Iterator[RawRow]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(
            str(path), f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", code="malformed_json"
        ) from e
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(str(path), "expected a JSON list of examples, or an object holding exactly one list")
        obj = lists[0]
    if not isinstance(obj, list):
        raise DataError(str(path), f"expected a JSON list of examples, got {type(obj).__name__}")
    for i, item in enumerate(obj):
        if isinstance(item, dict):
            yield RawRow(str(path), i, item)
        else:
            err = DataError(
                str(path), f"expected a JSON object, got {type(item).__name__}", code="not_an_object", row=i
            )
            yield RawRow(str(path), i, None, err, raw_text=json.dumps(item, default=str))


def _read_table(path: Path) -> Iterator[RawRow]:
    import polars as pl

    try:
        # A CSV is read as all strings: it has no types, and "00123" must not become 123.
        is_csv = path.suffix.lower() == ".csv"
        df = pl.read_csv(path, infer_schema=False) if is_csv else pl.read_parquet(path)
    except Exception as e:  # polars raises several error types for unreadable files
        raise DataError(str(path), f"cannot read file: {e}") from e
    for i, rec in enumerate(df.iter_rows(named=True)):
        yield RawRow(str(path), i, rec)


def _iter_dataset(ds, label: str) -> Iterator[RawRow]:
    for i, rec in enumerate(ds):
        yield RawRow(label, i, dict(rec))


def _pick_split(ds, label: str, split: str):
    from datasets import DatasetDict

    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DataError(label, f"split '{split}' not found; available: {sorted(ds)}")
        return ds[split]
    return ds


def _read_hf_disk(path: Path, split: str) -> Iterator[RawRow]:
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:
        raise DataError(str(path), f"not a dataset saved with save_to_disk: {e}") from e
    yield from _iter_dataset(_pick_split(ds, str(path), split), str(path))


def _read_hub(name: str, split: str) -> Iterator[RawRow]:
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise DataError(name, "no such file or directory", code="not_found")
    from datasets import load_dataset

    try:
        ds = load_dataset(name, split=split)
    except Exception as e:
        raise DataError(name, f"no such local path, and loading it from the hub failed: {e}", code="not_found") from e
    yield from _iter_dataset(ds, name)
