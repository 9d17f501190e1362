"""DuckDB helpers shared by the table's writer and reader: opening a file honestly, and frames from queries."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import duckdb
import polars as pl

from profiler.errors import TableError

# A DuckDB database file carries its magic bytes after an 8-byte checksum.
MAGIC = b"DUCK"
MAGIC_OFFSET = 8
# DuckDB's message when another process holds the file: '... Conflicting lock is held in PROG (PID 123) by user u'.
_LOCK = re.compile(r"Conflicting lock is held in (?P<prog>.+?) \(PID (?P<pid>\d+)\)")
# DuckDB's message when this process already holds the file with another configuration (read-only vs writing).
_SAME_PROCESS = re.compile(r"same database file with a different configuration")


def fetch_frame(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> pl.DataFrame:
    """Run a parameterized query and return all of its rows as a polars frame (types kept, also when empty)."""
    cursor = con.execute(query, params or [])
    with warnings.catch_warnings():
        # DuckDB suggests its relation API to save a copy, but that API takes no '?' parameters.
        warnings.simplefilter("ignore", UserWarning)
        return pl.from_arrow(cursor.to_arrow_table())


def file_kind(path: Path) -> str:
    """What is at ``path``: ``missing``, ``directory``, ``other`` (not a regular file), ``empty``, ``foreign``
    (a file that is not a DuckDB database) or ``duckdb``. Reads the first bytes only."""
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "directory"
    if not path.is_file():
        return "other"
    try:
        with path.open("rb") as f:
            head = f.read(MAGIC_OFFSET + len(MAGIC))
    except OSError as e:
        raise TableError(f"cannot read {path}: {e.strerror or e}") from e
    if not head:
        return "empty"
    return "duckdb" if head[MAGIC_OFFSET:] == MAGIC else "foreign"


def lock_holder(error: BaseException) -> tuple[int, str] | None:
    """``(pid, program)`` of the process holding a DuckDB file lock, from DuckDB's error; None for other errors."""
    m = _LOCK.search(str(error))
    return (int(m.group("pid")), m.group("prog")) if m else None


def connect(path: Path, *, read_only: bool, writing: bool) -> duckdb.DuckDBPyConnection:
    """Open ``path``; a lock held by another process is named (PID and program), other failures say so in one line.

    Args:
        writing: whether the caller means to write the table (the messages suggest another ``--out`` then).
    """
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as e:
        raise open_error(path, e, writing=writing) from e


def peek(path: Path) -> duckdb.DuckDBPyConnection:
    """A connection for looking into ``path`` without writing: read-only, or this process's own connection when
    it already holds the file open for writing (DuckDB refuses a second configuration of one file in a process)."""
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.ConnectionException as e:
        if not _SAME_PROCESS.search(str(e)):
            raise open_error(path, e, writing=True) from e
        return connect(path, read_only=False, writing=True)  # shares the open database; nothing is written
    except duckdb.Error as e:
        raise open_error(path, e, writing=True) from e


def open_error(path: Path, error: BaseException, *, writing: bool) -> TableError:
    """The one-line error for a DuckDB file that would not open (or attach)."""
    holder = lock_holder(error)
    if holder is not None:
        pid, prog = holder
        advice = "wait for it to finish or stop it (it resumes)" + (", or write to another --out" if writing else "")
        return TableError(
            f"{path} is in use by another process (PID {pid}: {prog}); "
            f"if it is an sftmix run writing this table, {advice}"
        )
    if _SAME_PROCESS.search(str(error)):
        other = "read-only" if writing else "for writing"
        return TableError(f"{path} is already open {other} in this process; close it first")
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return TableError(f"cannot open {path} {'for writing' if writing else 'as a DuckDB file'}: {first}")


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables and views stored in the database file (``schema.name`` outside ``main``), sorted."""
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() ORDER BY ALL"
    ).fetchall()
    return [name if schema == "main" else f"{schema}.{name}" for schema, name in rows]


def stored_schema_version(con: duckdb.DuckDBPyConnection, tables: list[str]) -> str | None:
    """``meta.schema_version`` when the database has our ``meta`` table holding it, else None."""
    if "meta" not in tables:
        return None
    try:
        row = con.execute("SELECT value FROM main.meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else json.loads(row[0])
    except (duckdb.Error, TypeError, ValueError):  # a 'meta' table of another program
        return None
