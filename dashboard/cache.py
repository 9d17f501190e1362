"""What the dashboard's pages read, computed once per table: :data:`dashboard.queries.CACHED` (every example without
its text, with its map cells; the dynamics' bins; the token-score checkpoints), and the whole-table summaries of the
pages (:meth:`TableCache.summary`: the overview's counts, the histogram, the hard tokens of all examples, the
comparison with another table, under that table's content key), and the hard-tokens page's token index
(:meth:`TableCache.token_index`: arrays, kept as ``.npy`` files and read back memory-mapped).

Each part is a relation of ``sftmix_cache``, an in-memory database attached to the reader's connection (so every
cursor of the reader sees it beside the read views). It is kept on disk, as Parquet beside the table
(``run.duckdb`` -> ``run.duckdb.dashboard/KEY/points.parquet``), and read from there as a view (DuckDB reads only the
columns and row groups a query needs), so the next server on the same table starts at once instead of computing it;
the summaries are kept there too (``NAME.json``, or ``NAME.parquet`` for a frame). ``KEY`` is the table's content
key (:func:`content_key`: its meta, which holds the data's fingerprint and every stage's record, its row counts, and
the file's size and time): a table written again gets another key, and the folders of other keys are removed when
a new one is written. Where the folder cannot be written (a read-only directory), the parts are tables in memory
and the summaries are not kept. Files are written under a temporary name and renamed into place, so two servers on
one table never read half a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dashboard.queries import CACHE, CACHED
from dashboard.token_index import ARRAYS, TokenIndex
from profiler.table import ConfidenceTable

COUNTED = ("examples", "confidence", "embeddings", "ifd", "scores", "token_scores")  # tables whose size is keyed


def content_key(table: ConfidenceTable) -> str:
    """A hash of what the table holds (its meta, its tables' row counts, and the file's size and modification time)
    and of what the cache keeps of it (the queries of :data:`CACHED`)."""
    con = table.cursor()
    meta = con.execute("SELECT key, value FROM meta_view ORDER BY key").fetchall()
    names = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()}
    counts = {n: con.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in COUNTED if n in names}
    stat = os.stat(table.path)
    text = json.dumps([meta, counts, stat.st_size, stat.st_mtime_ns, CACHED], default=str)  # and what is kept
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_dir(path: str | Path) -> Path:
    """The folder beside the table that keeps its parts (one sub-folder per content key)."""
    path = Path(path)
    return path.with_name(path.name + ".dashboard")


class TableCache:
    """The parts of :data:`CACHED` for one open table, built (or loaded from disk) on first need."""

    def __init__(self, table: ConfidenceTable, key: str | None = None, persist: bool = True):
        self.table = table
        self.key = key or content_key(table)
        self.folder = cache_dir(table.path) / self.key if persist else None
        self._lock = threading.Lock()
        self._made: set[str] = set()  # what once() made in this cache's in-memory database
        self._index_lock = threading.Lock()
        self._token_index: TokenIndex | None = None
        self.seconds: dict[str, float] = {}  # per part: the time it took to build or load
        table.con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {CACHE} (READ_WRITE)")

    def need(self, *parts: str) -> None:
        """Make sure these parts are relations of ``sftmix_cache``: a view of the part's Parquet beside the table
        (computed and written first where there is none), or a table in memory where none can be written."""
        with self._lock:
            con = self.table.cursor()
            have = {r[0] for r in con.execute(_HAVE, [CACHE, CACHE]).fetchall()}
            for part in parts:
                if part in have:
                    continue
                t0 = time.perf_counter()
                stored = self.folder / f"{part}.parquet" if self.folder else None
                if stored is None or not stored.is_file():
                    con.execute(f"CREATE OR REPLACE TABLE {CACHE}.{part} AS {CACHED[part]}")
                    if stored is not None and self._store(stored, functools.partial(_copy, con, part)):
                        con.execute(f"DROP TABLE {CACHE}.{part}")
                if stored is not None and stored.is_file():
                    con.execute(
                        f"CREATE OR REPLACE VIEW {CACHE}.{part} AS SELECT * FROM read_parquet('{_quoted(stored)}')"
                    )
                self.seconds[part] = time.perf_counter() - t0

    def made(self, tag: str) -> bool:
        return tag in self._made

    def once(self, tag: str, make: Callable[[], Any]) -> None:
        """Run ``make`` once per ``tag`` for this open table: what it builds lives in this cache's in-memory
        database, so a table opened again (another connection) builds it again."""
        with self._lock:
            if tag not in self._made:
                make()
                self._made.add(tag)

    def summary(self, name: str, compute: Callable[[], Any]) -> Any:
        """A whole-table result (a dict of JSON values, or a polars frame) of ``compute()``, kept beside the table
        as ``NAME.json`` or ``NAME.parquet`` and read from there by the next server."""
        if self.folder is not None:
            for suffix, read in ((".json", lambda f: json.loads(f.read_text())), (".parquet", pl.read_parquet)):
                stored = self.folder / f"{name}{suffix}"
                if stored.is_file():
                    return read(stored)
        value = compute()
        if self.folder is not None:
            if isinstance(value, pl.DataFrame):
                self._store(self.folder / f"{name}.parquet", value.write_parquet)
            else:
                self._store(self.folder / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(value)))
        return value

    def token_index(self, build: Callable[[], TokenIndex]) -> TokenIndex:
        """The table's token index (:mod:`dashboard.token_index`): read memory-mapped from beside the table
        (``token_index_*.npy``, with ``token_index.json`` written last), else ``build()`` and kept there; once per
        open table."""
        with self._index_lock:
            if self._token_index is None:
                self._token_index = self._read_index() or self._keep_index(build())
            return self._token_index

    def _read_index(self) -> TokenIndex | None:
        if self.folder is None or not (self.folder / "token_index.json").is_file():
            return None
        head = json.loads((self.folder / "token_index.json").read_text())
        try:
            arrays = {a: np.load(self.folder / f"token_index_{a}.npy", mmap_mode="r") for a in ARRAYS}
        except (OSError, ValueError):
            return None
        return TokenIndex(head["keys"], info=head["info"], **arrays)

    def _keep_index(self, index: TokenIndex) -> TokenIndex:
        if self.folder is not None:
            for name, array in index.arrays().items():
                if not self._store(self.folder / f"token_index_{name}.npy", functools.partial(_save, array)):
                    return index
            head = {"keys": index.keys, "info": index.info}
            self._store(self.folder / "token_index.json", lambda tmp: Path(tmp).write_text(json.dumps(head)))
        return index

    def _store(self, stored: Path, write: Callable[[str], Any]) -> bool:
        """Write a file beside the table (``write(temporary path)``, then renamed into place), dropping the folders
        of other keys; False where the folder cannot be written (the cache then stays in memory)."""
        try:
            stored.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=stored.parent, prefix=f".{stored.stem}-", suffix=stored.suffix)
            os.close(fd)
            try:
                write(tmp)
                os.chmod(tmp, 0o644)  # as the table's other files (a temporary file is the owner's alone)
                os.replace(tmp, stored)
            finally:
                Path(tmp).unlink(missing_ok=True)
            for other in stored.parent.parent.iterdir():
                if other.is_dir() and other.name != self.key:
                    shutil.rmtree(other, ignore_errors=True)
            return True
        except OSError:
            self.folder = None  # a read-only directory, say: memory only
            return False


_HAVE = (
    "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
    "UNION ALL SELECT view_name FROM duckdb_views() WHERE database_name = ?"
)


def _copy(con, part: str, path: str) -> None:
    con.execute(f"COPY {CACHE}.{part} TO '{_quoted(path)}' (FORMAT parquet)")


def _save(array: np.ndarray, path: str) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a name without it
        np.save(f, array)


def _quoted(path: str | Path) -> str:
    """A path for a SQL string literal (COPY takes no parameter for its file)."""
    return str(path).replace("'", "''")
