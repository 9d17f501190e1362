"""Writing a confidence table. Every write is one transaction, so a killed run leaves no half state, and Ctrl-C
is held until the write ends, so it never lands inside DuckDB or polars code.

Only sftmix tables are ever written: an existing path that is not one (another program's file or database, a
directory, an empty file) is refused before anything is opened for writing, so it stays untouched.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import numpy as np
import polars as pl

from profiler.errors import TableError

if TYPE_CHECKING:
    import pyarrow as pa
from profiler.table.db import connect, fetch_frame, file_kind, open_error, peek, stored_schema_version, table_names
from profiler.table.schema import (
    DDL,
    REGION_SQL,
    SCHEMA_VERSION,
    STAND_INS,
    check_version,
    has_region_column,
    is_older_minor,
)

EXAMPLE_COLUMNS = {
    "example_id": pl.Utf8,
    "row_index": pl.Int64,
    "source": pl.Utf8,
    "source_file": pl.Utf8,
    "file_row": pl.Int64,
    "messages": pl.Utf8,
    "prompt": pl.Utf8,
    "response": pl.Utf8,
    "record": pl.Utf8,
    "n_prompt_tokens": pl.Int32,
    "n_response_tokens": pl.Int32,
    "status": pl.Utf8,
    "status_detail": pl.Utf8,
    "truncated": pl.Boolean,
}


# The writer's DuckDB memory cap (buffer pool): it appends and aggregates, it needs no more.
WRITER_MEMORY_LIMIT = "2GB"
# The write-ahead log's size at which DuckDB checkpoints it into the file. Each checkpoint writes the primary-key
# indexes of the tables it touched whole, so at DuckDB's default (16 MB) a million-example run's ~500 score writes
# cost more the larger the table grows: 1M scores with token NLLs took 97 CPU s at 16 MB and 45 at 1 GB (one
# process, same rows). A killed run replays at most this much log when the table is next opened.
WRITER_CHECKPOINT_THRESHOLD = "1GB"

SCORE_COLUMNS = {
    "example_id": pl.Utf8,
    "checkpoint_id": pl.Int32,
    "nll_sum": pl.Float64,
    "n_tokens": pl.Int32,
    "mean_nll": pl.Float64,
    "perplexity": pl.Float64,
}
TOKEN_SCORE_COLUMNS = {"example_id": pl.Utf8, "checkpoint_id": pl.Int32, "nll": pl.List(pl.Float32)}
EXAMPLE_TOKEN_COLUMNS = {"example_id": pl.Utf8, "tokens": pl.List(pl.Utf8)}
IFD_COLUMNS = {
    "example_id": pl.Utf8,
    "checkpoint_id": pl.Int32,
    "model": pl.Utf8,
    "nll_sum_alone": pl.Float64,
    "n_tokens": pl.Int32,
    "ifd": pl.Float64,
}
# Meta keys of a part file that describe the part, not the merged run.
_PART_ONLY_META = ("shard", "shard_complete", "schema_version", "created_at", "command")


class ScoreLike(Protocol):
    """What :meth:`TableWriter.write_scores` reads of a score (``profiler.scoring``'s ``ExampleScore`` is one).

    ``embedding``: a float vector, or None. ``token_nll`` (optional; read with ``getattr``): the scored tokens'
    NLLs in position order, or None.
    """

    @property
    def example_id(self) -> str: ...
    @property
    def nll_sum(self) -> float: ...
    @property
    def n_tokens(self) -> int: ...
    @property
    def mean_nll(self) -> float: ...
    @property
    def perplexity(self) -> float: ...
    @property
    def embedding(self) -> Any: ...


@contextlib.contextmanager
def interrupts_held():
    """Hold Ctrl-C (SIGINT) until the block ends, then raise the ``KeyboardInterrupt`` it would have raised.

    A write takes milliseconds, and an interrupt inside it lands in native code: DuckDB cancels the statement with
    an error of its own, and polars, when DuckDB reads a registered frame, panics with a Rust backtrace. Held, the
    interrupt ends the run between two writes. Only Python's default handler is replaced (an ignored or custom
    SIGINT stays as it is), only in the main thread (where signal handlers run), and nested blocks hold once.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def _rows_or_none(frame: pl.DataFrame | None) -> pl.DataFrame | None:
    return frame if frame is not None and frame.height else None


def _list_frame(columns: dict[str, Sequence], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A frame of ``schema`` whose list columns are built in bulk (:func:`profiler.data.arrow.list_array`): a
    group of score batches holds tens of thousands of rows, and polars converts a Python list of arrays one row at
    a time (about 60 s of a million-example run's writes)."""
    import pyarrow as pa

    from profiler.data.arrow import list_array

    items = {pl.Float32: pa.float32(), pl.Utf8: pa.string()}
    return pl.DataFrame(
        {
            name: pl.from_arrow(list_array(columns[name], items[dtype.inner]))
            if isinstance(dtype, pl.List)
            else columns[name]
            for name, dtype in schema.items()
        },
        schema=schema,
    )


def _vector_frame(ids: list[str], vectors: list) -> pl.DataFrame | None:
    """``embeddings`` rows (``example_id``, ``vector``) of the given vectors, or None when there are none."""
    if not ids:
        return None
    return _list_frame({"example_id": ids, "vector": vectors}, {"example_id": pl.Utf8, "vector": pl.List(pl.Float32)})


def _token_frame(checkpoint_id: int, ids: list[str], per_token: list) -> pl.DataFrame | None:
    """``token_scores`` rows of the given per-token NLL vectors, or None when there are none."""
    if not ids:
        return None
    return _list_frame(
        {"example_id": ids, "checkpoint_id": [checkpoint_id] * len(ids), "nll": per_token}, TOKEN_SCORE_COLUMNS
    )


def check_output_table(path: str | Path) -> None:
    """Refuse, without writing anything, an existing ``path`` that is not an sftmix table of this schema major.

    A missing path is fine (a new table). Refused: a directory, an empty file, a file that is not a DuckDB
    database, a DuckDB database without our ``meta.schema_version`` (another program's), and a table of another
    schema major. A table open in another process is reported with that process. Cheap: reads the file's first
    bytes and peeks read-only, so the CLI can call it before any model loads.

    Raises:
        TableError: one line naming the path, what it is, and what to do.
    """
    path = Path(path)
    kind = file_kind(path)
    if kind == "missing":
        return
    refuse = "refusing to write into it. Use a new --out."
    if kind == "directory":
        raise TableError(f"{path} is a directory, not an sftmix table; {refuse}")
    if kind == "other":
        raise TableError(f"{path} is not a regular file, not an sftmix table; {refuse}")
    if kind == "empty":
        raise TableError(f"{path} is an empty file, not an sftmix table; {refuse}")
    if kind == "foreign":
        raise TableError(f"{path} is not a DuckDB file, so not an sftmix table; {refuse}")
    con = peek(path)
    try:
        tables = table_names(con)
        version = stored_schema_version(con, tables)
    finally:
        con.close()
    if version is None:
        raise TableError(
            f"{path} is a DuckDB database that is not an sftmix table (tables: {', '.join(tables) or 'none'}); {refuse}"
        )
    check_version(version, str(path))


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint to score: its path, training step, fraction of the epoch and kind."""

    path: str
    step: int | None
    fraction: float | None
    kind: str = "model"


class TableWriter:
    """The single writer of a confidence table.

    Opening creates the schema in a new file, or checks that an existing file is an sftmix table of this schema
    major (:func:`check_output_table`) before anything is written into it.

    Raises:
        TableError: the path is not an sftmix table, or another process holds it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_output_table(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.path, read_only=False, writing=True)
        try:
            # DuckDB's buffer pool may grow to 80% of RAM by default, and a writer keeps the blocks it wrote there:
            # a cap keeps a million-example run's memory flat (the rest spills to OUT.tmp/).
            self.con.execute(f"SET memory_limit = '{WRITER_MEMORY_LIMIT}'")
            self.con.execute(f"SET checkpoint_threshold = '{WRITER_CHECKPOINT_THRESHOLD}'")
            self._create()
        except BaseException:
            self.con.close()
            raise

    def _create(self) -> None:
        # The file may have appeared since the check (another process): refuse it before the DDL runs.
        tables = table_names(self.con)
        if tables and stored_schema_version(self.con, tables) is None:
            raise TableError(
                f"{self.path} is a DuckDB database that is not an sftmix table (tables: {', '.join(tables)}); "
                "refusing to write into it. Use a new --out."
            )
        with self.transaction():
            self.con.execute(DDL)
            if self.get_meta("schema_version") is None:
                self._put_meta(
                    {
                        "schema_version": SCHEMA_VERSION,
                        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    }
                )
        version = self.get_meta("schema_version")
        check_version(version, str(self.path))
        if is_older_minor(version):  # an older 1.x file: the DDL above added the tables it lacked
            self.set_meta({"schema_version": SCHEMA_VERSION})
        if not has_region_column(self.con):  # an older file: add the region column, filled as it is computed
            with self.transaction():
                self.con.execute("ALTER TABLE confidence ADD COLUMN region VARCHAR")
                self.con.execute(
                    f"UPDATE confidence SET region = r.region FROM (SELECT example_id, {REGION_SQL} AS region "
                    "FROM confidence) r WHERE confidence.example_id = r.example_id"
                )

    @contextlib.contextmanager
    def transaction(self):
        """A context manager for one transaction: commit on success, roll back on any error; Ctrl-C is held until
        it ends (:func:`interrupts_held`)."""
        with interrupts_held():
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # never hide the error that ends the transaction
                    self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")

    # --- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else json.loads(row[0])

    def _put_meta(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [k, json.dumps(v, default=str)])

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.transaction():
            self._put_meta(values)

    # --- examples ---------------------------------------------------------------------------------
    def n_examples(self) -> int:
        return self.con.execute("SELECT count(*) FROM examples").fetchone()[0]

    def init_examples(
        self,
        rows: Sequence[dict[str, Any]] | pl.DataFrame | Iterable[pa.RecordBatch],
        fingerprint: str,
        settings: dict[str, Any],
    ) -> bool:
        """Write the examples of a new run, or check that a re-run is over the same data with the same settings.

        Args:
            rows: one dict (or frame row) per example with the ``examples`` columns (:data:`EXAMPLE_COLUMNS`);
                a frame's missing columns are null. Or Arrow record batches of those columns in that order (the
                rendered cache's), read a batch at a time: only consumed when the examples are written now.

        Returns:
            True when the examples were written now, False when they were already there.

        Raises:
            TableError: when the table holds another dataset or was scored with other settings.
        """
        old = self.get_meta("dataset_fingerprint")
        if self.n_examples() and old is not None:
            if old != fingerprint:
                raise TableError(
                    f"{self.path} was written for other data (fingerprint {old}, now {fingerprint}); "
                    "the dataset changed since the run started. Use a new --out, or restore the data."
                )
            old_settings = self.get_meta("score_settings") or {}
            changed = {k: (old_settings.get(k), v) for k, v in settings.items() if old_settings.get(k) != v}
            if changed:
                raise TableError(f"{self.path} was scored with other settings {changed}; use a new --out")
            return False
        if isinstance(rows, pl.DataFrame):
            batches = [
                rows.select(
                    pl.col(c).cast(t) if c in rows.columns else pl.lit(None, dtype=t).alias(c)
                    for c, t in EXAMPLE_COLUMNS.items()
                )
            ]
        elif isinstance(rows, Sequence):
            batches = [pl.DataFrame(list(rows), schema=EXAMPLE_COLUMNS)]
        else:
            batches = rows
        # One transaction per batch: DuckDB holds a transaction's rows in memory until it commits, which at a
        # million examples is gigabytes. The fingerprint, written last, marks the examples complete; rows of an
        # insert cut short (no fingerprint yet) are dropped and written again.
        with self.transaction():
            self.con.execute("DELETE FROM examples")
        for batch in batches:
            with self.transaction():
                self.con.register("new_examples", batch)
                self.con.execute(f"INSERT INTO examples ({', '.join(EXAMPLE_COLUMNS)}) SELECT * FROM new_examples")
                self.con.unregister("new_examples")
        with self.transaction():
            self._put_meta({"dataset_fingerprint": fingerprint, "score_settings": settings})
        return True

    def ok_example_ids(self) -> list[str]:
        rows = self.con.execute("SELECT example_id FROM examples WHERE status = 'ok' ORDER BY row_index").fetchall()
        return [r[0] for r in rows]

    def ok_token_counts(self) -> list[tuple[str, int, int]]:
        """``(example_id, tokens, response tokens)`` of the usable examples, in input order."""
        return self.con.execute(
            "SELECT example_id, n_prompt_tokens + n_response_tokens, n_response_tokens FROM examples "
            "WHERE status = 'ok' ORDER BY row_index"
        ).fetchall()

    def n_ok_examples(self) -> int:
        return self.con.execute("SELECT count(*) FROM examples WHERE status = 'ok'").fetchone()[0]

    # --- checkpoints ------------------------------------------------------------------------------
    def register_checkpoints(self, infos: Sequence[CheckpointInfo]) -> list[int]:
        """Ids for the given checkpoints, adding the ones not yet in the table (matched by path)."""
        ids = []
        with self.transaction():
            for info in infos:
                row = self.con.execute("SELECT checkpoint_id FROM checkpoints WHERE path = ?", [info.path]).fetchone()
                if row is None:
                    new_id = self.con.execute("SELECT coalesce(max(checkpoint_id) + 1, 0) FROM checkpoints").fetchone()[
                        0
                    ]
                    self.con.execute(
                        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                        [new_id, info.step, info.fraction, info.path, info.kind],
                    )
                    ids.append(new_id)
                else:
                    ids.append(row[0])
        return ids

    def checkpoint_ids(self) -> list[int]:
        """The registered checkpoints' ids, ascending."""
        return [r[0] for r in self.con.execute("SELECT checkpoint_id FROM checkpoints ORDER BY 1").fetchall()]

    def checkpoint_infos(self) -> list[CheckpointInfo]:
        """The registered checkpoints, in id order."""
        rows = self.con.execute("SELECT path, step, fraction, kind FROM checkpoints ORDER BY checkpoint_id").fetchall()
        return [CheckpointInfo(path=p, step=s, fraction=f, kind=k) for p, s, f, k in rows]

    # --- scores -----------------------------------------------------------------------------------
    def scored_ids(self, checkpoint_id: int) -> set[str]:
        rows = self.con.execute("SELECT example_id FROM scores WHERE checkpoint_id = ?", [checkpoint_id]).fetchall()
        return {r[0] for r in rows}

    def n_scores(self) -> int:
        return self.con.execute("SELECT count(*) FROM scores").fetchone()[0]

    def write_scores(
        self,
        checkpoint_id: int,
        scores: Iterable[ScoreLike] | pl.DataFrame,
        tokens: Mapping[str, Sequence[str]] | None = None,
    ) -> int:
        """Insert scores (and the embeddings and token NLLs they carry) in one transaction; returns the number of
        scores given.

        Args:
            scores: score objects (:class:`ScoreLike`), or a frame with ``example_id``, ``nll_sum``, ``n_tokens``
                and optionally ``embedding`` (a list of floats, or null) and ``token_nll`` (a list of floats, or
                null); its mean NLL and perplexity are derived.
            tokens: the decoded text of each example's scored tokens (``example_tokens``), by example id.

        Pairs already present are kept (a resumed run may repeat them), as are embeddings, token NLLs and token
        texts already written.
        """
        with interrupts_held():  # building the frames runs polars code too
            if isinstance(scores, pl.DataFrame):
                frame, vectors, per_token = self._score_frames(checkpoint_id, scores)
            else:
                scores = list(scores)
                frame = pl.DataFrame(
                    {
                        "example_id": [s.example_id for s in scores],
                        "checkpoint_id": [checkpoint_id] * len(scores),
                        "nll_sum": [s.nll_sum for s in scores],
                        "n_tokens": [s.n_tokens for s in scores],
                        "mean_nll": [s.mean_nll for s in scores],
                        "perplexity": [s.perplexity for s in scores],
                    },
                    schema=SCORE_COLUMNS,
                )
                embedded = [s for s in scores if s.embedding is not None]
                vectors = _vector_frame([s.example_id for s in embedded], [s.embedding for s in embedded])
                with_tokens = [s for s in scores if getattr(s, "token_nll", None) is not None]
                per_token = _token_frame(
                    checkpoint_id, [s.example_id for s in with_tokens], [s.token_nll for s in with_tokens]
                )
            if frame.is_empty():
                return 0
            texts = None
            if tokens:
                texts = _list_frame(
                    {"example_id": list(tokens), "tokens": list(tokens.values())}, EXAMPLE_TOKEN_COLUMNS
                )
            with self.transaction():
                self._insert("scores", frame)
                if vectors is not None:
                    self._insert("embeddings", vectors, "example_id, vector")
                if per_token is not None:
                    self._insert("token_scores", per_token)
                if texts is not None:
                    self._insert("example_tokens", texts)
            return frame.height

    def _insert(self, table: str, frame: pl.DataFrame, columns: str | None = None) -> None:
        """``INSERT OR IGNORE`` a frame's rows (in its column order, or into ``columns``), within a transaction."""
        self.con.register("new_rows", frame)
        try:
            target = f"{table} ({columns})" if columns else table
            self.con.execute(f"INSERT OR IGNORE INTO {target} SELECT * FROM new_rows")
        except BaseException:
            # In an aborted transaction (the INSERT failed) unregistering fails too: keep the cause.
            with contextlib.suppress(duckdb.Error):
                self.con.unregister("new_rows")
            raise
        self.con.unregister("new_rows")

    @staticmethod
    def _score_frames(
        checkpoint_id: int, scores: pl.DataFrame
    ) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
        mean = pl.col("nll_sum").cast(pl.Float64) / pl.col("n_tokens")
        frame = scores.select(
            pl.col("example_id").cast(pl.Utf8),
            pl.lit(checkpoint_id, dtype=pl.Int32).alias("checkpoint_id"),
            pl.col("nll_sum").cast(pl.Float64),
            pl.col("n_tokens").cast(pl.Int32),
            mean.alias("mean_nll"),
            mean.exp().alias("perplexity"),
        )
        vectors = per_token = None
        if "embedding" in scores.columns:
            vectors = scores.filter(pl.col("embedding").is_not_null()).select(
                pl.col("example_id").cast(pl.Utf8), pl.col("embedding").cast(pl.List(pl.Float32)).alias("vector")
            )
        if "token_nll" in scores.columns:
            per_token = scores.filter(pl.col("token_nll").is_not_null()).select(
                pl.col("example_id").cast(pl.Utf8),
                pl.lit(checkpoint_id, dtype=pl.Int32).alias("checkpoint_id"),
                pl.col("token_nll").cast(pl.List(pl.Float32)).alias("nll"),
            )
        return frame, _rows_or_none(vectors), _rows_or_none(per_token)

    # --- token scores and IFD ---------------------------------------------------------------------
    def token_scored_ids(self, checkpoint_id: int) -> set[str]:
        """The examples whose token NLLs at ``checkpoint_id`` are stored."""
        rows = self.con.execute(
            "SELECT example_id FROM token_scores WHERE checkpoint_id = ?", [checkpoint_id]
        ).fetchall()
        return {r[0] for r in rows}

    def tokenized_ids(self) -> set[str]:
        """The examples whose token texts (``example_tokens``) are stored."""
        return {r[0] for r in self.con.execute("SELECT example_id FROM example_tokens").fetchall()}

    def mean_nlls(self, checkpoint_id: int) -> dict[str, float]:
        """Each scored example's mean response NLL at ``checkpoint_id``."""
        rows = self.con.execute(
            "SELECT example_id, mean_nll FROM scores WHERE checkpoint_id = ?", [checkpoint_id]
        ).fetchall()
        return dict(rows)

    def ifd_ids(self, model: str) -> set[str]:
        """The examples whose IFD was computed with ``model`` (a checkpoint's or another model's path)."""
        return {r[0] for r in self.con.execute("SELECT example_id FROM ifd WHERE model = ?", [model]).fetchall()}

    def write_ifd(self, checkpoint_id: int | None, model: str, rows: Sequence[tuple[str, float, int, float]]) -> int:
        """Insert IFD rows ``(example_id, nll_sum_alone, n_tokens, ifd)`` computed with ``model`` (at
        ``checkpoint_id``, or None for a model that is not one of the checkpoints) in one transaction.

        An example's earlier IFD (of another model, say) is replaced. Returns the number of rows.
        """
        if not rows:
            return 0
        frame = pl.DataFrame(
            [(i, checkpoint_id, model, s, n, v) for i, s, n, v in rows], schema=IFD_COLUMNS, orient="row"
        )
        with self.transaction():
            self.con.register("new_ifd", frame)
            self.con.execute("INSERT OR REPLACE INTO ifd SELECT * FROM new_ifd")
            self.con.unregister("new_ifd")
        return frame.height

    # --- embeddings -------------------------------------------------------------------------------
    def embedded_ids(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT example_id FROM embeddings").fetchall()}

    def n_unprojected(self) -> int:
        """Embeddings that have no 2-D coordinates yet."""
        return self.con.execute("SELECT count(*) FROM embeddings WHERE umap_x IS NULL").fetchone()[0]

    def embedding_matrix(self) -> tuple[list[str], np.ndarray]:
        """Example ids (sorted) and their vectors as one ``[n, dim]`` float32 array."""
        frame = fetch_frame(self.con, "SELECT example_id, vector FROM embeddings ORDER BY example_id")
        if frame.is_empty():
            return [], np.zeros((0, 0), dtype=np.float32)
        return frame["example_id"].to_list(), np.asarray(frame["vector"].to_list(), dtype=np.float32)

    def write_projection(self, ids: Sequence[str], xy: np.ndarray) -> None:
        """Set the 2-D coordinates of the given examples in one transaction."""
        frame = pl.DataFrame(
            {"example_id": list(ids), "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64)}
        )
        with self.transaction():
            self.con.register("new_xy", frame)
            self.con.execute(
                "UPDATE embeddings SET umap_x = new_xy.x, umap_y = new_xy.y FROM new_xy "
                "WHERE embeddings.example_id = new_xy.example_id"
            )
            self.con.unregister("new_xy")

    def scores_frame(self) -> pl.DataFrame:
        return fetch_frame(self.con, "SELECT * FROM scores")

    # --- confidence -------------------------------------------------------------------------------
    def write_confidence(self, frame: pl.DataFrame) -> None:
        """Replace the confidence table with ``frame`` in one transaction."""
        with self.transaction():
            self.con.execute("DELETE FROM confidence")
            self.con.register("new_conf", frame)
            self.con.execute(
                "INSERT INTO confidence SELECT example_id, confidence, mean_nll, variability, split, quantile_bin, "
                "rank, region FROM new_conf"
            )
            self.con.unregister("new_conf")

    # --- merging part files -----------------------------------------------------------------------
    def insert_parts(self, parts: Sequence[str | Path]) -> None:
        """Copy the part files of one sharded run into this (new) table, in one transaction.

        The first part gives the checkpoints and the run's meta (without the part's own keys: ``shard``,
        ``shard_complete``, ``schema_version``, ``created_at``, ``command``); every part gives its examples, scores,
        embeddings, token scores and texts, and IFD. ``meta.merged_from`` lists the parts. Which parts belong
        together is the caller's check.
        """
        parts = [Path(p) for p in parts]
        if not parts:
            raise TableError("no part files to merge")
        con = self.con
        with self._attached(parts) as aliases, self.transaction():
            con.execute(f"INSERT INTO checkpoints SELECT * FROM {aliases[0]}.checkpoints")
            for key, value in con.execute(f"SELECT key, value FROM {aliases[0]}.meta").fetchall():
                if key not in _PART_ONLY_META:
                    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])
            for alias in aliases:
                # A part holds its shard's rows (one written before 1.2 holds every row: taken once).
                con.execute(f"INSERT OR IGNORE INTO examples SELECT * FROM {alias}.examples")
                self._copy_scores(alias)
            self._put_meta({"merged_from": [str(p) for p in parts]})

    def insert_scores_of_parts(self, parts: Sequence[str | Path]) -> None:
        """Copy what the part files of this run's ranks scored (scores, embeddings, token scores and texts, IFD)
        into this table, in one transaction; rows already here are kept."""
        con = self.con
        with self._attached([Path(p) for p in parts]) as aliases, self.transaction():
            for alias in aliases:
                self._copy_scores(alias)
                row = con.execute(f"SELECT value FROM {alias}.meta WHERE key = 'embedding_checkpoint'").fetchone()
                if row is not None:
                    con.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_checkpoint', ?)", [row[0]])

    @contextlib.contextmanager
    def _attached(self, parts: Sequence[Path]):
        """The part files attached read-only (as ``part0``, ``part1``, ...) for the block, detached after; DuckDB
        attaches and detaches outside transactions."""
        attached = []
        try:
            for k, path in enumerate(parts):
                try:
                    self.con.execute(f"ATTACH ? AS part{k} (READ_ONLY)", [str(path)])
                except duckdb.Error as e:
                    raise open_error(path, e, writing=False) from e
                attached.append(f"part{k}")
            yield attached
        finally:
            for alias in attached:
                self.con.execute(f"DETACH {alias}")

    def _copy_scores(self, alias: str) -> None:
        """An attached part's scores, embeddings, and (parts written before 1.1 lack them) token scores and IFD."""
        self.con.execute(f"INSERT OR IGNORE INTO scores SELECT * FROM {alias}.scores")
        self.con.execute(f"INSERT OR IGNORE INTO embeddings SELECT * FROM {alias}.embeddings")
        for name in self._tables_of(alias, STAND_INS):
            self.con.execute(f"INSERT OR IGNORE INTO {name} SELECT * FROM {alias}.{name}")

    def _tables_of(self, catalog: str, names: Iterable[str]) -> list[str]:
        """Which of ``names`` an attached database has."""
        rows = self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = 'main'",
            [catalog],
        ).fetchall()
        present = {r[0] for r in rows}
        return [n for n in names if n in present]

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
