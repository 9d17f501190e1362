"""The data stage's output: every input row, normalized and rendered once, as a 🤗 ``datasets`` Arrow cache.

Rows are read into an Arrow file (JSONL lines unparsed), then parsed, normalized and rendered by a batched
``Dataset.map`` over ``num_proc`` processes; token ids are int32 and the response mask uint8. The result lives in
``CACHE_ROOT/KEY/`` (beside the table by default), where ``KEY`` is a fingerprint of the data's bytes, the
tokenizer, the template, ``max_length``, ``truncate``, the format and the fields. Every later reader (a resumed
run, each shard worker, the fine-tune, scoring, IFD, the embedding pass) memory-maps it instead of rendering again.

A build runs in a temporary folder under a file lock and is renamed into place once its manifest is written, so
a killed build leaves nothing that a later run could take for a finished one (it starts over), and processes
that start together (shard workers) render once: the others wait for the lock and map the result.

Nothing is lost: every input row has a row here, with ``status`` ``ok`` or the reason it cannot be scored (the
error names its file, row and field), exactly as the run's ``examples`` table will.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from profiler import __version__
from profiler.data.arrow import arrow_batch
from profiler.data.ids import content_hash
from profiler.data.io import RawRow, parse_jsonl_line, read_rows
from profiler.data.items import RenderedItems
from profiler.data.load import base_id, normalize_row
from profiler.data.render import Renderer, RenderFailure
from profiler.errors import DataError

# Bumped when what a cache holds changes, so older caches are rebuilt rather than misread.
CACHE_FORMAT = 1
MANIFEST = "manifest.json"
# Rows per map batch and per raw-file batch: large enough that the tokenizer's batch call pays, small enough to
# keep a worker's memory flat.
BATCH_ROWS = 1000
# A rendering progress bar is shown from this many rows (below, rendering takes seconds).
PROGRESS_ROWS = 10_000
# Below this many rows per process, forking workers costs more than it saves.
ROWS_PER_PROCESS = 2000

RAW_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("source_file", pa.string()),
        ("file_row", pa.int64()),
        ("line", pa.int64()),
        ("text", pa.string()),  # a JSONL line, the JSON of a record, or the raw text of a row that did not read
        ("read_code", pa.string()),  # why the row could not be read (null when it could)
        ("read_reason", pa.string()),
    ]
)


def _features():
    from datasets import Features, List, Value

    return Features(
        {
            "source": Value("string"),
            "source_file": Value("string"),
            "file_row": Value("int64"),
            "line": Value("int64"),
            "base_id": Value("string"),
            "status": Value("string"),
            "status_detail": Value("string"),
            "error_reason": Value("string"),
            "error_field": Value("string"),
            "error_line": Value("int64"),
            "messages": Value("string"),
            "prompt": Value("string"),
            "response": Value("string"),
            "record": Value("string"),
            "input_ids": List(Value("int32")),
            "response_mask": List(Value("uint8")),
            "n_tokens": Value("int32"),
            "scored_len": Value("int32"),
            "n_prompt_tokens": Value("int32"),
            "n_response_tokens": Value("int32"),
            "truncated": Value("bool"),
        }
    )


@functools.cache
def _schema() -> pa.Schema:
    return _features().arrow_schema


def default_cache_root(table: str | Path) -> Path:
    """``run.duckdb`` -> ``run_data/`` beside it; a part file ``run.part-1-of-8.duckdb`` shares its run's."""
    p = Path(table)
    return p.with_name(p.stem.split(".part-")[0] + "_data")


# --- fingerprints --------------------------------------------------------------------------------------------
def _hash_file(h, path: Path) -> None:
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)


def source_digest(path: str, split: str) -> str:
    """A hash of one source's content: a file's bytes, every file of a saved dataset, or a hub dataset's own
    fingerprint (loaded through its cache)."""
    h = hashlib.sha256()
    p = Path(path)
    if p.is_file():
        _hash_file(h, p)
    elif p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            _hash_file(h, f)
    else:
        h.update(f"hub:{path}:{split}".encode())
        try:
            from datasets import load_dataset

            h.update(str(load_dataset(path, split=split)._fingerprint).encode())
        except Exception:  # reading it reports the error, with the source named
            pass
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """A hash of what rendering depends on in a tokenizer: its vocabulary and rules, chat template and specials."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(tokenizer.get_vocab())).encode())
    specials = [tokenizer.bos_token, tokenizer.eos_token, getattr(tokenizer, "chat_template", None)]
    h.update(json.dumps(specials, default=str).encode())
    return h.hexdigest()


def render_key(
    sources: Sequence[tuple[str, str]],
    renderer: Renderer,
    *,
    fmt: str,
    fields: Mapping[str, str] | None,
    split: str,
) -> str:
    """The cache key: what the rendered rows depend on, and nothing else (not ``on_error``: statuses are kept)."""
    parts = {
        "format_version": CACHE_FORMAT,
        "sftmix": __version__,
        "sources": [(name, source_digest(path, split)) for name, path in sources],
        "split": split,
        "tokenizer": tokenizer_digest(renderer.tokenizer),
        "template": renderer.template,
        "max_length": renderer.max_length,
        "truncate": renderer.truncate,
        "format": fmt,
        "fields": dict(sorted((fields or {}).items())),
    }
    return content_hash(parts)


# --- reading raw rows ---------------------------------------------------------------------------------------
def _raw_columns(rows: list[tuple[str, RawRow]]) -> pa.RecordBatch:
    def text(r: RawRow) -> str:
        if r.record is not None:
            return json.dumps(r.record, ensure_ascii=False, default=str)
        return r.raw_text if r.raw_text is not None else ""

    cols = {
        "source": [name for name, _ in rows],
        "source_file": [r.source_file for _, r in rows],
        "file_row": [r.row for _, r in rows],
        "line": [r.line for _, r in rows],
        "text": [text(r) for _, r in rows],
        "read_code": [r.error.code if r.error else None for _, r in rows],
        "read_reason": [r.error.reason if r.error else None for _, r in rows],
    }
    return pa.RecordBatch.from_pydict(cols, schema=RAW_SCHEMA)


def write_raw(sources: Sequence[tuple[str, str]], split: str, path: Path) -> int:
    """Every input row of every source, in order, into an Arrow stream file; returns the row count."""
    n = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, RAW_SCHEMA) as writer:
        pending: list[tuple[str, RawRow]] = []
        for name, src in sources:
            for r in read_rows(src, split=split, parse_jsonl=False):
                pending.append((name, r))
                if len(pending) >= BATCH_ROWS * 10:
                    writer.write_batch(_raw_columns(pending))
                    n, pending = n + len(pending), []
        if pending:
            writer.write_batch(_raw_columns(pending))
            n += len(pending)
    return n


# --- the map: parse, normalize, render ---------------------------------------------------------------------
def _raw_row(batch: dict[str, list], i: int) -> RawRow:
    """Row ``i`` as read: its record parsed here (JSONL lines are parsed in the workers), or its read error."""
    source_file, row, line, text = batch["source_file"][i], batch["file_row"][i], batch["line"][i], batch["text"][i]
    if batch["read_code"][i] is not None:
        err = DataError(source_file, batch["read_reason"][i], code=batch["read_code"][i], row=row, line=line)
        return RawRow(source_file, row, None, err, line=line, raw_text=text)
    return parse_jsonl_line(source_file, row, line, text)


def render_batch(batch: dict[str, list], *, renderer: Renderer, fmt: str, fields) -> pa.Table:
    """The map function: one output row per input row, rendered, or with the reason it could not be."""
    n = len(batch["text"])
    out: dict[str, list] = {k: [None] * n for k in _features() if k not in RAW_SCHEMA.names}
    out["truncated"] = [False] * n
    out["input_ids"] = [np.empty(0, np.int32)] * n  # typed, so a batch of failed rows stays int32
    out["response_mask"] = [np.empty(0, np.uint8)] * n
    examples = {}
    for i in range(n):
        r = _raw_row(batch, i)
        example, err = normalize_row(r, fmt, fields)
        out["record"][i] = r.raw_text if r.record is not None else json.dumps({"_raw": r.raw_text}, ensure_ascii=False)
        if err is not None:
            _fail(out, i, err, base_id(r, None))
        else:
            examples[i] = example
    rendered = renderer.render_many([ex.messages for ex in examples.values()]) if examples else []
    for (i, ex), rx in zip(examples.items(), rendered):
        out["base_id"][i] = base_id(None, ex)
        out["messages"][i] = json.dumps(ex.messages, ensure_ascii=False)
        out["prompt"][i], out["response"][i] = ex.prompt_text, ex.response_text
        if isinstance(rx, RenderFailure):
            err = DataError(batch["source_file"][i], rx.reason, code=rx.code, row=batch["file_row"][i])
            _fail(out, i, err, out["base_id"][i])
            continue
        positions = np.flatnonzero(rx.response_mask)
        out["status"][i], out["status_detail"][i] = "ok", ""
        out["input_ids"][i], out["response_mask"][i] = rx.input_ids, rx.response_mask.view(np.uint8)
        out["n_tokens"][i], out["scored_len"][i] = len(rx.input_ids), int(positions[-1]) + 1
        out["n_response_tokens"][i] = int(np.count_nonzero(rx.response_mask[1:]))
        out["n_prompt_tokens"][i] = len(rx.input_ids) - out["n_response_tokens"][i]
        out["truncated"][i] = rx.truncated
    kept = {k: batch[k] for k in _schema().names if k not in out}  # the input's columns the output keeps
    return arrow_batch({**kept, **out}, _schema())


def _fail(out: dict[str, list], i: int, err: DataError, base_id: str) -> None:
    out["base_id"][i] = base_id
    out["status"][i], out["status_detail"][i] = err.code, err.describe()
    out["error_reason"][i], out["error_field"][i], out["error_line"][i] = err.reason, err.field, err.line


# --- the cache ----------------------------------------------------------------------------------------------
def _unique_ids(base: pa.ChunkedArray) -> pa.Array:
    """Ids from content hashes: the n-th repeat of a hash gets ``-n`` (see :mod:`profiler.data.ids`)."""
    import polars as pl

    frame = pl.DataFrame({"b": pl.from_arrow(base)}).with_columns(k=pl.int_range(pl.len()).over("b"))
    ids = frame.select(
        pl.when(pl.col("k") == 0).then(pl.col("b")).otherwise(pl.col("b") + "-" + pl.col("k").cast(pl.String))
    )
    return ids.to_series().to_arrow().cast(pa.string())


def dataset_fingerprint(ids: Sequence[str], sources: Sequence[str], statuses: Sequence[str]) -> str:
    """Identifies the dataset in the table's meta: every row's id, source and status, in order."""
    h = hashlib.sha256()
    for eid, src, status in zip(ids, sources, statuses):
        h.update(f"{eid}\t{src}\t{status}\n".encode())
    return h.hexdigest()[:16]


def _processes(num_proc: int | None, n_rows: int) -> int | None:
    wanted = num_proc or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    n = max(1, min(wanted or 1, n_rows // ROWS_PER_PROCESS))
    return n if n > 1 else None


def map_arrow(
    raw_file: Path, fn, *, fn_kwargs: dict, features, remove_columns: Sequence[str], num_proc, progress: bool, desc: str
):
    """``fn`` as a batched ``Dataset.map`` over the Arrow file ``raw_file``, over processes, written beside it
    (``rendered*.arrow``); returns the mapped dataset and its file names."""
    import datasets

    raw = datasets.Dataset.from_file(str(raw_file))
    progress = progress and len(raw) >= PROGRESS_ROWS
    if not progress:
        datasets.disable_progress_bars()
    try:
        mapped = raw.map(
            fn,
            batched=True,
            batch_size=BATCH_ROWS,
            num_proc=_processes(num_proc, len(raw)),
            fn_kwargs=fn_kwargs,
            remove_columns=list(remove_columns),
            features=features,
            cache_file_name=str(raw_file.with_name("rendered.arrow")),
            # The cache's own key names the result: no hashing of the function (and its tokenizer) by datasets.
            new_fingerprint=f"{raw_file.parent.name}-rendered",
            load_from_cache_file=False,
            desc=desc,
        )
    finally:
        if not progress:
            datasets.enable_progress_bars()
    return mapped, [Path(f["filename"]).name for f in mapped.cache_files]


def build_once(root: Path, key: str, build) -> tuple[Path, dict, bool]:
    """The cache folder ``root/key``: built by ``build(tmp) -> manifest`` under a file lock unless it is there.

    The build writes into a temporary folder, the manifest last, and the folder is renamed into place, so what a
    killed build left is never taken for a result (the next build starts over). Returns the folder, its manifest
    and whether this call built it.
    """
    from filelock import FileLock

    final = root / key
    if (manifest := read_manifest(final, key)) is not None:
        return final, manifest, False
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key}.lock")):
        if (manifest := read_manifest(final, key)) is not None:  # another process built it while this one waited
            return final, manifest, False
        tmp = root / f".{key}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.mkdir(parents=True)
        manifest = {"key": key, "format": CACHE_FORMAT, **build(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        os.replace(tmp, final)
    return final, manifest, True


def open_files(path: Path, files: Sequence[str]):
    """The Arrow files of a cache folder as one memory-mapped ``datasets.Dataset``."""
    import datasets

    parts = [datasets.Dataset.from_file(str(path / f)) for f in files]
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _build(tmp: Path, sources, renderer: Renderer, fmt: str, fields, split: str, num_proc, progress) -> dict:
    n_rows = write_raw(sources, split, tmp / "raw.arrow")
    rendered, files = map_arrow(
        tmp / "raw.arrow",
        render_batch,
        fn_kwargs={"renderer": renderer, "fmt": fmt, "fields": dict(fields or {})},
        features=_features(),
        remove_columns=["text", "read_code", "read_reason"],
        num_proc=num_proc,
        progress=progress,
        desc="rendering",
    )
    ids = _unique_ids(rendered.data.column("base_id"))
    ids_table = pa.table({"example_id": ids})
    with pa.OSFile(str(tmp / "ids.arrow"), "wb") as sink, pa.ipc.new_stream(sink, ids_table.schema) as w:
        w.write_table(ids_table)
    fp = dataset_fingerprint(
        ids.to_pylist(), rendered.data.column("source").to_pylist(), rendered.data.column("status").to_pylist()
    )
    n_tokens = int(pc.sum(rendered.data.column("n_tokens")).as_py() or 0)
    del rendered
    (tmp / "raw.arrow").unlink()
    return {"files": files, "n_rows": n_rows, "n_tokens": n_tokens, "fingerprint": fp}


def read_manifest(path: Path, key: str) -> dict | None:
    """The manifest of the finished cache ``path`` built for ``key``, or None (absent, unfinished, another key)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("key") == key and manifest.get("format") == CACHE_FORMAT else None


def render_dataset(
    sources: Sequence[tuple[str, str]],
    renderer: Renderer,
    cache_root: str | Path,
    *,
    fmt: str = "auto",
    fields: Mapping[str, str] | None = None,
    split: str = "train",
    num_proc: int | None = None,
    progress: bool = False,
) -> RenderedData:
    """The rendered rows of ``sources`` (``(name, path)`` pairs): from the cache when it holds them, else built.

    Args:
        cache_root: the folder holding caches (one subfolder per key).
        num_proc: processes for the map (None or 0: one per CPU; small inputs run in this process).
    """
    key = render_key(sources, renderer, fmt=fmt, fields=fields, split=split)
    path, manifest, built = build_once(
        Path(cache_root), key, lambda tmp: _build(tmp, sources, renderer, fmt, fields, split, num_proc, progress)
    )
    data = RenderedData(path, manifest)
    data.built = built
    return data


class RenderedData:
    """A finished cache, memory-mapped: the rows (in input order) with their ids, statuses and token ids."""

    def __init__(self, path: Path, manifest: dict):
        import datasets

        self.path = path
        self.manifest = manifest
        rows = open_files(path, manifest["files"])
        ids = datasets.Dataset.from_file(str(path / "ids.arrow"))
        self.dataset = datasets.concatenate_datasets([rows, ids], axis=1)
        self.table: pa.Table = self.dataset.data.table  # memory-mapped
        self.built = False  # whether this run built it (else an earlier one did)

    @property
    def n_rows(self) -> int:
        return self.manifest["n_rows"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def column(self, name: str) -> list:
        return self.table.column(name).to_pylist()

    def first_error(self) -> DataError | None:
        """The first row (in input order) that cannot be scored, as the error a strict run stops with."""
        bad = pc.indices_nonzero(pc.not_equal(self.table.column("status"), "ok"))
        if len(bad) == 0:
            return None
        row = self.dataset[int(bad[0].as_py())]
        return DataError(
            row["source_file"],
            row["error_reason"],
            code=row["status"],
            row=row["file_row"],
            field=row["error_field"],
            line=row["error_line"],
        )

    def rows_where(self, keep: np.ndarray | None = None, *, ok: bool = False) -> np.ndarray:
        """Row numbers (int64), of every row or those ``keep`` marks, only scored ones with ``ok``."""
        mask = np.ones(self.n_rows, dtype=bool) if keep is None else keep
        if ok:
            mask = mask & pc.equal(self.table.column("status"), "ok").to_numpy(zero_copy_only=False)
        return np.flatnonzero(mask)

    def items(self, rows: np.ndarray) -> RenderedItems:
        """The score items of ``rows`` (scored rows only), read from the memory-mapped columns on access."""
        return RenderedItems.from_table(self.table, rows)

    def example_batches(self, rows: np.ndarray, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """The ``examples`` columns of ``rows``, a batch at a time (``row_index`` is the row number): slices of the
        memory-mapped columns where the rows run on (no copy), a copy of just those columns' rows otherwise."""
        table = self.table.select([c for c in columns if c != "row_index"])
        step = BATCH_ROWS * 10
        for s in range(0, len(rows), step):
            chunk = rows[s : s + step]
            if chunk[-1] - chunk[0] == len(chunk) - 1:  # a run of rows
                part = table.slice(int(chunk[0]), len(chunk))
            else:
                part = take_rows(table, chunk)
            part = part.append_column("row_index", pa.array(chunk, pa.int64()))
            yield from part.select(list(columns)).combine_chunks().to_batches()


# Rows per slice that a take reads from: Arrow's take concatenates the chunks it reads, and a string column's
# offsets are 32-bit, so a take over a million rows' texts (a shard's rows, spread over the whole cache) overflows
# at 2 GiB. A slice of this many rows stays far below that (texts of up to ~40 KB a row).
TAKE_SPAN = 50_000


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``table.take(rows)`` (rows ascending), each part from a slice of at most :data:`TAKE_SPAN` rows."""
    parts, start = [], 0
    while start < len(rows):
        lo = int(rows[start])
        end = int(np.searchsorted(rows, lo + TAKE_SPAN, side="left"))
        parts.append(table.slice(lo, TAKE_SPAN).take(pa.array(rows[start:end] - lo)))
        start = end
    return pa.concat_tables(parts)
