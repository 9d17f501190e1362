"""Errors that name where bad input came from, so a user can fix the file."""

from __future__ import annotations


class SftmixError(Exception):
    """Base class for errors the CLI reports as a one-line message instead of a traceback."""


class DataError(SftmixError):
    """A problem with one input row (or the whole input file), naming file, row and field.

    Attributes:
        source_file: the file (or dataset name) the row came from.
        row: 0-based row index within that file, or None for file-level problems.
        field: the field at fault, or None.
        code: a short machine-readable reason (stored as the example's ``status`` when skipped).
        reason: a human-readable description.
        line: 1-based line number for line-oriented files (JSONL), when known.
    """

    def __init__(
        self,
        source_file: str,
        reason: str,
        *,
        code: str = "invalid",
        row: int | None = None,
        field: str | None = None,
        line: int | None = None,
    ):
        self.source_file = str(source_file)
        self.row = row
        self.field = field
        self.code = code
        self.reason = reason
        self.line = line
        super().__init__(self.describe())

    def describe(self) -> str:
        where = [self.source_file]
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.reason}"


class ModelError(SftmixError):
    """A model or checkpoint that cannot be loaded or used."""


class TableError(SftmixError):
    """A confidence table that cannot be read or does not match the run being written."""
