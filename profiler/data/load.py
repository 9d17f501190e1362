"""From data sources to rows with stable ids: parsed examples, and the rows that could not be used."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.data.formats import Example, detect_format, normalize_record
from profiler.data.ids import IdAssigner, content_hash
from profiler.data.io import RawRow, read_rows
from profiler.errors import DataError


@dataclass
class LoadedRow:
    """One input row with its id; ``example`` is None when the row was not usable (see ``status``)."""

    example_id: str
    row_index: int
    source: str
    source_file: str
    file_row: int
    status: str
    status_detail: str
    example: Example | None
    record: dict[str, Any] | None
    raw_text: str | None = None


def parse_source_spec(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` gives a source name; a bare path is named after its file stem."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        if name and path:
            return name, path
    p = Path(spec)
    return (p.stem if p.suffix else p.name) or spec, spec


def _unknown_format(r: RawRow) -> DataError:
    return DataError(
        r.source_file,
        f"unknown format: columns {sorted(r.record)} match none of alpaca (instruction, output), "
        "prompt_completion (prompt, completion|response), chat (messages), sharegpt (conversations); "
        "pass --format and --field to map them",
        code="unknown_format",
        row=r.row,
        line=r.line,
    )


def load_examples(
    sources: Sequence[str | tuple[str, str]],
    *,
    fmt: str = "auto",
    fields: Mapping[str, str] | None = None,
    on_error: str = "raise",
    split: str = "train",
) -> list[LoadedRow]:
    """Load and normalize every row of every source.

    Args:
        sources: paths (or ``NAME=PATH`` specs, or ``(name, path)`` pairs); the name becomes ``source``.
        fmt: ``auto`` or one of :data:`profiler.data.formats.FORMATS`.
        fields: field-name overrides, e.g. ``{"instruction": "question", "output": "answer"}``.
        on_error: ``raise`` stops at the first bad row; ``skip`` keeps it with its reason in ``status``.
        split: split to read from multi-split datasets.

    Returns:
        One :class:`LoadedRow` per input row, in input order.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    ids = IdAssigner()
    out: list[LoadedRow] = []
    for spec in sources:
        name, path = spec if isinstance(spec, tuple) else parse_source_spec(spec)
        for r in read_rows(path, split=split):
            out.append(_load_row(r, name, fmt, fields, on_error, ids, len(out)))
    return out


def normalize_row(r: RawRow, fmt: str, fields: Mapping[str, str] | None) -> tuple[Example | None, DataError | None]:
    """A raw row as an example, or the error that keeps it from being one (its read error, or its format's)."""
    if r.error is not None:
        return None, r.error
    # Auto-detection is per row, so files mixing formats (say, an export of several sources) load.
    row_fmt = detect_format(r.record, fields) if fmt == "auto" else fmt
    try:
        if row_fmt is None:
            raise _unknown_format(r)
        example = normalize_record(r.record, row_fmt, fields=fields, source_file=r.source_file, row=r.row, line=r.line)
    except DataError as e:
        return None, e
    return example, None


def base_id(r: RawRow, example: Example | None) -> str:
    """The content hash a row's id starts from: its messages, or (a row that is no example) what was read."""
    if example is not None:
        return content_hash(example.messages)
    return content_hash({"raw": r.raw_text if r.record is None else r.record})


def _load_row(
    r: RawRow,
    source: str,
    fmt: str,
    fields: Mapping[str, str] | None,
    on_error: str,
    ids: IdAssigner,
    index: int,
) -> LoadedRow:
    example, error = normalize_row(r, fmt, fields)
    if error is not None:
        if on_error == "raise":
            raise error
        return LoadedRow(
            ids(base_id(r, None)),
            index,
            source,
            r.source_file,
            r.row,
            error.code,
            error.describe(),
            None,
            r.record,
            r.raw_text,
        )
    return LoadedRow(
        ids(base_id(r, example)),
        index,
        source,
        r.source_file,
        r.row,
        "ok",
        "",
        example,
        r.record,
        r.raw_text,
    )


def record_json(row: LoadedRow) -> str:
    """The original record as JSON (or the raw text of a row that did not parse)."""
    if row.record is not None:
        return json.dumps(row.record, ensure_ascii=False, default=str)
    return json.dumps({"_raw": row.raw_text}, ensure_ascii=False)
