"""Exporting splits: the original example fields plus the confidence columns, as JSONL, JSON, Parquet or a HF dataset.

An export never destroys: an existing output is refused unless ``overwrite`` is asked for, and even then only what an
export writes is replaced (a file of the export's format, or a saved dataset directory), never the source table, a
DuckDB file or a directory holding anything else. The output appears atomically: it is written under a temporary
name beside the target and renamed into place, so a failed export leaves the old output as it was.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

from profiler.errors import SftmixError
from profiler.table.db import MAGIC, MAGIC_OFFSET
from profiler.table.progress import merged_name, unfinished
from profiler.table.reader import EXPORT_SPLITS, ConfidenceTable, open_table
from profiler.table.records import CONF_COLUMNS, batches_frame, records_frame, write_jsonl

__all__ = [
    "CONF_COLUMNS",
    "EXPORT_FORMATS",
    "SPLITS",
    "SUFFIX_FORMATS",
    "export_split",
    "records_frame",
    "split_frame",
    "split_records",
    "write_jsonl",
]

SPLITS = EXPORT_SPLITS  # a half of the split, or all
EXPORT_FORMATS = ("jsonl", "json", "parquet", "hf")
# The output name's suffix -> format, when no format is given. No suffix (or an existing directory) means hf.
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
# What `Dataset.save_to_disk` writes into its directory, and nothing else: the only directories an export replaces.
_DATASET_MARKERS = ("dataset_info.json", "state.json")
_DATASET_FILE = re.compile(r"^(dataset_info\.json|state\.json|data-\d+-of-\d+\.arrow)$")


def split_records(table_path: str | Path, split: str = "all") -> list[dict]:
    """The scored examples of a split (``all``: both halves), most confident first, with their original fields.

    A confidence column whose name an original field already uses is renamed ``sftmix_<name>``.
    """
    _check_split(split)
    with open_table(table_path) as t:
        return t.export_records(split)


def split_frame(table_path: str | Path, split: str = "all") -> pl.DataFrame:
    """:func:`split_records` as a polars frame."""
    _check_split(split)
    with open_table(table_path) as t:
        return batches_frame(t.export_batches(split))  # Arrow memory, one batch of records in Python at a time


def export_split(
    table_path: str | Path,
    out: str | Path,
    *,
    split: str = "all",
    fmt: str | None = None,
    overwrite: bool = False,
) -> int:
    """Write a split of a finished table to ``out`` and return the number of examples written.

    Args:
        table_path: the confidence table (read only).
        out: a file (``.jsonl``, ``.json`` for a JSON array, ``.parquet``) or a directory (a saved Hugging Face
            dataset: a name without suffix, or an existing directory).
        split: ``confident``, ``unconfident`` or ``all``.
        fmt: one of :data:`EXPORT_FORMATS`; None: from ``out`` (its suffix, or hf for a directory).
        overwrite: replace an existing output, when it is one an export writes (a file of this format, or a saved
            dataset directory or an empty one). Never the source table, a DuckDB file or another directory.

    Raises:
        SftmixError: one line naming the path and what to do: the output exists (without ``overwrite``) or may
            not be replaced, its suffix contradicts ``fmt``, or the table is not finished (or a shard part file).
    """
    _check_split(split)
    if fmt is not None and fmt not in EXPORT_FORMATS:
        raise SftmixError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    table_path = Path(table_path)
    dir_hint = str(out).endswith(("/", os.sep))
    out = Path(out)
    _guard_source(table_path, out)
    fmt = _resolve_format(out, fmt, dir_hint)
    _check_existing(table_path, out, fmt, overwrite)
    with open_table(table_path) as t:
        _check_finished(t)
        if overwrite:
            _guard_inputs(t, out)
        batches = t.export_batches(split)  # read while written: one batch of records in Python at a time
        if fmt == "hf":
            return _write_dataset(batches, table_path, out, overwrite)
        writer: Callable[[Iterable[list[dict]], Path], int] = {
            "jsonl": _write_jsonl_file,
            "json": _write_json_file,
            "parquet": _write_parquet_file,
        }[fmt]
        return _write_file(batches, writer, table_path, out, fmt, overwrite)


# --- where an export may write ------------------------------------------------------------------------------
def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise SftmixError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def _same_path(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path (also when missing), or the same file through a
    symlink or hard link."""
    if Path(os.path.abspath(a)) == Path(os.path.abspath(b)) or a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is missing
        return False


def _is_duckdb(path: Path) -> bool:
    """A regular file carrying DuckDB's magic bytes, whatever its name."""
    try:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            head = f.read(MAGIC_OFFSET + len(MAGIC))
    except OSError:
        return False
    return head[MAGIC_OFFSET:] == MAGIC


def _within(inner: Path, outer: Path) -> bool:
    return inner.resolve().is_relative_to(outer.resolve())


def _guard_source(table_path: Path, out: Path) -> None:
    """Refuse, whatever ``overwrite`` says, an output that is (or holds) the source table, a DuckDB file, or the
    current directory."""
    if _same_path(out, table_path):
        raise SftmixError(
            f"{out} is the source table; export to a new path (e.g. -o {table_path.with_suffix('.jsonl').name})"
        )
    if out.is_dir():
        if table_path.exists() and _within(table_path, out):
            raise SftmixError(
                f"{out} is a directory holding the source table {table_path}; export to a new file or directory "
                f"(e.g. -o {table_path.with_suffix('.jsonl').name})"
            )
        if _within(Path.cwd(), out):
            raise SftmixError(f"{out} is the current directory (or holds it); export to a new file or directory")
    if _is_duckdb(out):
        raise SftmixError(
            f"{out} is a DuckDB database (a confidence table?); export never replaces one: choose another -o"
        )


def _accepted() -> str:
    return ", ".join(SUFFIX_FORMATS) + " for a file, or a name without suffix (or an existing directory) for a dataset"


def _resolve_format(out: Path, fmt: str | None, dir_hint: bool) -> str:
    """The format of ``out``: from its suffix when ``fmt`` is None; a known suffix must agree with ``fmt``."""
    suffix = "" if dir_hint or out.is_dir() else out.suffix.lower()
    implied = SUFFIX_FORMATS.get(suffix)
    if fmt is None:
        if out.is_dir() or dir_hint or not suffix:
            return "hf"
        if implied is None:
            raise SftmixError(f"{out}: unknown export suffix '{out.suffix}'; use {_accepted()}, or pass --format")
        return implied
    if (out.is_dir() or dir_hint) and fmt != "hf":
        what = f"{out} is a directory" if out.is_dir() else f"{out}/ names a directory"
        raise SftmixError(f"{what}, but --format {fmt} writes a file; name a file (e.g. {out}/all.{fmt})")
    if implied is not None and implied != fmt:
        raise SftmixError(
            f"{out} has the suffix '{out.suffix}' of {implied}, but --format is {fmt}; "
            f"rename the output or pass --format {implied}"
        )
    return fmt


def _dataset_dir_state(path: Path) -> str:
    """``empty``, ``dataset`` (only what `save_to_disk` writes, markers included) or ``other``."""
    try:
        entries = list(os.scandir(path))
    except OSError as e:
        raise SftmixError(f"cannot read the directory {path}: {e.strerror or e}") from e
    if not entries:
        return "empty"
    names = {e.name for e in entries}
    only_dataset_files = all(e.is_file(follow_symlinks=False) and _DATASET_FILE.match(e.name) for e in entries)
    markers = all(m in names for m in _DATASET_MARKERS)
    if only_dataset_files and markers and not any(_is_duckdb(Path(e.path)) for e in entries):
        return "dataset"
    return "other"


def _holding(path: Path, limit: int = 3) -> str:
    """What makes ``path`` not a saved dataset, in a few words."""
    names = sorted(e.name for e in os.scandir(path) if not _DATASET_FILE.match(e.name) or not e.is_file())
    if not names:
        return f"without {' and '.join(_DATASET_MARKERS)}"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return "holding other files (" + ", ".join(names[:limit]) + more + ")"


def _check_existing(table_path: Path, out: Path, fmt: str, overwrite: bool) -> None:
    """Refuse an existing ``out`` that may not be replaced, or (without ``overwrite``) that exists at all."""
    if not os.path.lexists(out):
        return
    _guard_source(table_path, out)  # again: also right before the rename
    if fmt == "hf":
        if not out.is_dir():
            raise SftmixError(
                f"{out} exists and is not a directory, so not a dataset an export wrote; choose another -o"
            )
        state = _dataset_dir_state(out)
        if state == "other":
            raise SftmixError(
                f"{out} is a directory {_holding(out)}, not a dataset an export wrote; export into a new directory"
            )
        if not overwrite:
            what = "an empty directory" if state == "empty" else "a saved dataset"
            raise SftmixError(f"{out} exists ({what}); pass --overwrite to replace it")
        return
    if out.is_dir():
        raise SftmixError(f"{out} is a directory, but a {fmt} export writes a file; name a file (e.g. {out}/all.{fmt})")
    if not out.is_file():
        raise SftmixError(f"{out} exists and is not a regular file; choose another -o")
    if not overwrite:
        raise SftmixError(f"{out} exists; pass --overwrite to replace it")


def _guard_inputs(t: ConfidenceTable, out: Path) -> None:
    """Refuse to replace a data file the table was scored from (when it is still where the run found it)."""
    if not os.path.lexists(out):
        return
    specs = (t.meta.get("score_config") or {}).get("data") or []
    for spec in specs if isinstance(specs, list) else [specs]:
        for candidate in {str(spec), str(spec).split("=", 1)[-1]}:
            if candidate and _same_path(Path(candidate), out) and os.path.exists(candidate):
                raise SftmixError(
                    f"{out} is an input of {t.path} (its data); export never replaces it: choose another -o"
                )


# --- is the table finished ----------------------------------------------------------------------------------
def _check_finished(t: ConfidenceTable) -> None:
    """Refuse a table without confidence rows yet, naming the stage it is at and how to finish it."""
    shard = t.meta.get("shard")
    if shard:
        where = f"shard {shard.get('index')} of {shard.get('count')}" if isinstance(shard, dict) else "a shard"
        merged = merged_name(t.path)
        if not t.meta.get("shard_complete"):
            raise SftmixError(
                f"{t.path} is a shard part file ({where}) whose scoring has not completed; re-run its "
                f"`sftmix score --shard` with the same --out, then `sftmix merge {merged}`, and export the merged table"
            )
        raise SftmixError(
            f"{t.path} is a shard part file ({where}), not a finished table; run `sftmix merge {merged}` "
            "to merge the parts, then export the merged table"
        )
    s = t.summary()
    if sum(s["splits"].values()):
        return
    u = unfinished(t, s)
    if u is None or u.stage == "embed":  # every stage up to the split ran, and none of the examples was scored
        status = ", ".join(f"{k}: {v}" for k, v in s["status"].items()) or "no examples"
        raise SftmixError(f"{t.path} has no scored examples to export ({status})")
    raise SftmixError(
        f"{t.path} is not finished: {u.what} (stages done: {', '.join(u.done) or 'none'}); {u.resume} to finish it"
    )


# --- writing atomically -------------------------------------------------------------------------------------
def _temp_path(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_jsonl_file(batches: Iterable[list[dict]], path: Path) -> int:
    n = 0
    with path.open("x", encoding="utf-8") as f:
        for batch in batches:
            write_jsonl(batch, f)
            n += len(batch)
    return n


def _write_json_file(batches: Iterable[list[dict]], path: Path) -> int:
    """A JSON array, one record a line."""
    n = 0
    with path.open("x", encoding="utf-8") as f:
        f.write("[\n")
        for rec in (rec for batch in batches for rec in batch):
            f.write(("," if n else "") + json.dumps(rec, ensure_ascii=False, default=str) + "\n")
            n += 1
        f.write("]\n")
    return n


def _write_parquet_file(batches: Iterable[list[dict]], path: Path) -> int:
    """One file with one schema: the batches' frames joined in Arrow memory (columns a batch lacks are null)."""
    frame = batches_frame(batches)
    frame.write_parquet(path)
    return frame.height


def _parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SftmixError(f"cannot create the directory {out.parent}: {e.strerror or e}") from e


def _write_file(
    batches: Iterable[list[dict]],
    writer: Callable[[Iterable[list[dict]], Path], int],
    table_path: Path,
    out: Path,
    fmt: str,
    overwrite: bool,
) -> int:
    """Write through a temporary file renamed into place; returns the number of records written."""
    _parent(out)
    tmp = _temp_path(out, "tmp")
    try:
        n = writer(batches, tmp)
        _fsync(tmp)
        _check_existing(table_path, out, fmt, overwrite)  # what is there now, right before the rename
        if overwrite:
            os.replace(tmp, out)
        else:
            _link_new(tmp, out)
    except OSError as e:
        raise SftmixError(f"cannot write {out}: {e.strerror or e}") from e
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
    _fsync(out.parent)
    return n


def _link_new(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out`` only if ``out`` does not exist (a file appearing meanwhile is kept)."""
    try:
        os.link(tmp, out)  # fails if out exists: no file is replaced
    except FileExistsError:
        raise SftmixError(f"{out} exists; pass --overwrite to replace it") from None
    except OSError:  # no hard links on this file system
        if os.path.lexists(out):
            raise SftmixError(f"{out} exists; pass --overwrite to replace it") from None
        os.replace(tmp, out)


def _write_dataset(batches: Iterable[list[dict]], table_path: Path, out: Path, overwrite: bool) -> int:
    """A saved dataset, swapped in: the new directory is renamed in, the old one (if any) aside and then deleted;
    on failure the old one is put back. Returns the number of records written."""
    from datasets import Dataset

    _parent(out)
    tmp = _temp_path(out, "tmp")
    old: Path | None = None
    try:
        frame = batches_frame(batches)
        Dataset.from_polars(frame).save_to_disk(str(tmp))
        _check_existing(table_path, out, "hf", overwrite)  # what is there now, right before the rename
        if os.path.lexists(out):
            old = _temp_path(out, "old")
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old is not None:
                os.rename(old, out)
                old = None
            raise
    except OSError as e:
        raise SftmixError(f"cannot write {out}: {e.strerror or e}") from e
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    return frame.height
