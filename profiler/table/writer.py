"""Writing a confidence table. Every write is one transaction, so a killed run leaves no half state."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from profiler.errors import TableError
from profiler.scoring.base import ExampleScore
from profiler.table.db import fetch_frame
from profiler.table.schema import DDL, SCHEMA_VERSION, check_version

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


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint to score: its path, training step, fraction of the epoch and kind."""

    path: str
    step: int | None
    fraction: float | None
    kind: str = "model"


class TableWriter:
    """The single writer of a confidence table.

    Opening creates the schema in a new file, or checks the schema version of an existing one.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path))
        except duckdb.Error as e:
            raise TableError(f"cannot open {self.path} for writing: {e}") from e
        with self.transaction():
            self.con.execute(DDL)
            if self.get_meta("schema_version") is None:
                self._put_meta(
                    {
                        "schema_version": SCHEMA_VERSION,
                        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    }
                )
        check_version(self.get_meta("schema_version"), str(self.path))

    def transaction(self):
        """A context manager for one transaction: commit on success, roll back on any error."""
        con = self.con

        class _Tx:
            def __enter__(self):
                con.execute("BEGIN TRANSACTION")

            def __exit__(self, exc_type, exc, tb):
                con.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

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

    def init_examples(self, rows: Sequence[dict[str, Any]], fingerprint: str, settings: dict[str, Any]) -> bool:
        """Write the examples of a new run, or check that a re-run is over the same data with the same settings.

        Returns:
            True when the examples were written now, False when they were already there.

        Raises:
            TableError: when the table holds another dataset or was scored with other settings.
        """
        if self.n_examples():
            old = self.get_meta("dataset_fingerprint")
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
        frame = pl.DataFrame(list(rows), schema=EXAMPLE_COLUMNS)
        with self.transaction():
            self.con.register("new_examples", frame)
            self.con.execute(f"INSERT INTO examples ({', '.join(EXAMPLE_COLUMNS)}) SELECT * FROM new_examples")
            self.con.unregister("new_examples")
            self._put_meta({"dataset_fingerprint": fingerprint, "score_settings": settings})
        return True

    def ok_example_ids(self) -> list[str]:
        rows = self.con.execute("SELECT example_id FROM examples WHERE status = 'ok' ORDER BY row_index").fetchall()
        return [r[0] for r in rows]

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

    def checkpoint_infos(self) -> list[CheckpointInfo]:
        """The registered checkpoints, in id order."""
        rows = self.con.execute("SELECT path, step, fraction, kind FROM checkpoints ORDER BY checkpoint_id").fetchall()
        return [CheckpointInfo(path=p, step=s, fraction=f, kind=k) for p, s, f, k in rows]

    # --- scores -----------------------------------------------------------------------------------
    def scored_ids(self, checkpoint_id: int) -> set[str]:
        rows = self.con.execute("SELECT example_id FROM scores WHERE checkpoint_id = ?", [checkpoint_id]).fetchall()
        return {r[0] for r in rows}

    def write_scores(self, checkpoint_id: int, scores: Iterable[ExampleScore]) -> int:
        """Insert scores (and the embeddings they carry) in one transaction.

        Pairs already present are kept (a resumed run may repeat them), as are embeddings already written.
        """
        scores = list(scores)
        frame = pl.DataFrame(
            [(s.example_id, checkpoint_id, s.nll_sum, s.n_tokens, s.mean_nll, s.perplexity) for s in scores],
            schema={
                "example_id": pl.Utf8,
                "checkpoint_id": pl.Int32,
                "nll_sum": pl.Float64,
                "n_tokens": pl.Int32,
                "mean_nll": pl.Float64,
                "perplexity": pl.Float64,
            },
            orient="row",
        )
        if frame.is_empty():
            return 0
        embedded = [s for s in scores if s.embedding is not None]
        vectors = None
        if embedded:
            vectors = pl.DataFrame(
                {
                    "example_id": [s.example_id for s in embedded],
                    "vector": [np.asarray(s.embedding, dtype=np.float32) for s in embedded],
                },
                schema={"example_id": pl.Utf8, "vector": pl.List(pl.Float32)},
            )
        with self.transaction():
            self.con.register("new_scores", frame)
            self.con.execute("INSERT OR IGNORE INTO scores SELECT * FROM new_scores")
            self.con.unregister("new_scores")
            if vectors is not None:
                self.con.register("new_vectors", vectors)
                self.con.execute(
                    "INSERT OR IGNORE INTO embeddings (example_id, vector) SELECT example_id, vector FROM new_vectors"
                )
                self.con.unregister("new_vectors")
        return frame.height

    # --- embeddings -------------------------------------------------------------------------------
    def embedded_ids(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT example_id FROM embeddings").fetchall()}

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
                "rank FROM new_conf"
            )
            self.con.unregister("new_conf")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
