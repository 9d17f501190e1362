"""Export never destroys: the user's files and the source table survive every export mistake byte for byte, an
existing output is replaced only with overwrite and only when an export wrote it, the output appears atomically, and
an unfinished table is refused with the stage it is at."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

import profiler.export as export_mod
from profiler import open_table
from profiler.cli import main
from profiler.errors import SftmixError
from profiler.export import CONF_COLUMNS, export_split
from profiler.table import TableWriter


# --- helpers -------------------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) -> its bytes: equal snapshots mean nothing was touched, added
    (no temporary left behind) or removed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(argv: list[str], capsys, *fragments: str) -> str:
    """Run the CLI, expect exit 2 with one line on stderr (no traceback) holding each fragment; return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sftmix export: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    assert "wrote" not in captured.out
    return err


@pytest.fixture
def workdir(other_profile, tmp_path) -> Path:
    """A user's directory: a finished table ``run.duckdb`` (a copy of the session's profile) beside other files."""
    d = tmp_path / "work"
    d.mkdir()
    shutil.copyfile(other_profile, d / "run.duckdb")
    (d / "notes.txt").write_text("my notes\n")
    (d / "data").mkdir()
    (d / "data" / "train.jsonl").write_text('{"instruction": "Q", "output": "A"}\n')
    return d


@pytest.fixture
def n_scored(other_profile) -> int:
    with open_table(other_profile) as t:
        return t.confidence.height


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- the user's files and the source table survive -----------------------------------------------------------
def test_export_into_the_tables_own_directory_destroys_nothing(workdir, capsys, monkeypatch):
    before = snapshot(workdir)
    monkeypatch.chdir(workdir)
    refused(["export", "run.duckdb", "-o", "."], capsys, ". is a directory holding the source table run.duckdb")
    refused(["export", "run.duckdb", "-o", ".", "--format", "hf"], capsys, "holding the source table")
    refused(["export", str(workdir / "run.duckdb"), "-o", str(workdir)], capsys, "holding the source table")
    with pytest.raises(SftmixError, match="holding the source table"):
        export_split("run.duckdb", ".", fmt="hf", overwrite=True)
    assert snapshot(workdir) == before


def test_export_into_the_current_directory_is_refused(other_profile, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(SftmixError, match="current directory"):
        export_split(other_profile, ".", overwrite=True)
    assert list(empty.iterdir()) == [] and empty.is_dir()


def test_export_onto_the_source_table_is_refused(workdir, capsys):
    table = workdir / "run.duckdb"
    (workdir / "link.jsonl").symlink_to(table)
    os.link(table, workdir / "hard.jsonl")
    before = snapshot(workdir)
    refused(["export", str(table), "-o", str(table)], capsys, f"{table} is the source table")
    refused(["export", str(table), "-o", str(table), "--format", "jsonl"], capsys, "is the source table")
    for name in ("run.duckdb", "link.jsonl", "hard.jsonl"):  # by name, through a symlink, through a hard link
        with pytest.raises(SftmixError, match="is the source table"):
            export_split(table, workdir / name, fmt="jsonl", overwrite=True)
    assert snapshot(workdir) == before
    with open_table(table) as t:  # still a readable table
        assert t.confidence.height > 0


def test_a_missing_source_table_is_never_its_own_output(tmp_path):
    with pytest.raises(SftmixError, match="is the source table"):
        export_split(tmp_path / "gone.duckdb", tmp_path / "gone.duckdb", fmt="jsonl")
    assert list(tmp_path.iterdir()) == []


def test_another_duckdb_file_is_never_replaced_whatever_its_name(workdir, capsys):
    table = workdir / "run.duckdb"
    shutil.copyfile(table, workdir / "other.duckdb")
    shutil.copyfile(table, workdir / "renamed.jsonl")  # a DuckDB file under an export's name
    before = snapshot(workdir)
    refused(["export", str(table), "-o", str(workdir / "other.duckdb")], capsys, "other.duckdb is a DuckDB database")
    refused(["export", str(table), "-o", str(workdir / "other.duckdb"), "--format", "jsonl"], capsys, "DuckDB")
    with pytest.raises(SftmixError, match="renamed.jsonl is a DuckDB database"):
        export_split(table, workdir / "renamed.jsonl", overwrite=True)
    assert snapshot(workdir) == before


def test_existing_output_is_kept_without_overwrite(workdir, capsys):
    (workdir / "out.jsonl").write_text('{"mine": 1}\n')
    (workdir / "out.parquet").write_bytes(b"not yours")
    before = snapshot(workdir)
    out = workdir / "out.jsonl"
    refused(["export", str(workdir / "run.duckdb"), "-o", str(out)], capsys, f"{out} exists; pass --overwrite")
    with pytest.raises(SftmixError, match="out.parquet exists; pass --overwrite to replace it"):
        export_split(workdir / "run.duckdb", workdir / "out.parquet")
    assert snapshot(workdir) == before


def test_hf_never_replaces_a_directory_holding_other_files(workdir, capsys):
    table = workdir / "run.duckdb"
    # A directory that looks like a saved dataset but holds a user's file too.
    mixed = workdir / "mixed"
    mixed.mkdir()
    for name in ("dataset_info.json", "state.json"):
        (mixed / name).write_text("{}")
    (mixed / "README.md").write_text("keep me\n")
    before = snapshot(workdir)
    refused(["export", str(table), "-o", str(workdir / "data")], capsys, "holding other files (train.jsonl)")
    for d in (workdir / "data", mixed):
        with pytest.raises(SftmixError, match="not a dataset an export wrote"):
            export_split(table, d, overwrite=True)
        with pytest.raises(SftmixError, match="not a dataset an export wrote"):
            export_split(table, d, fmt="hf", overwrite=True)
    assert snapshot(workdir) == before


def test_an_input_of_the_table_is_never_replaced(other_profile, profile_data):
    data = Path(profile_data[0].split("=", 1)[1])
    before = data.read_bytes()
    with pytest.raises(SftmixError, match="is an input of"):
        export_split(other_profile, data, overwrite=True)
    assert data.read_bytes() == before


# --- overwrite replaces what an export wrote -----------------------------------------------------------------
def test_overwrite_replaces_a_jsonl_file(workdir, n_scored):
    out = workdir / "out.jsonl"
    out.write_text('{"old": 1}\n')
    with pytest.raises(SftmixError, match="exists; pass --overwrite"):
        export_split(workdir / "run.duckdb", out)
    with out.open("rb") as reader:  # a reader of the old file keeps reading it: the new one is renamed in
        assert export_split(workdir / "run.duckdb", out, overwrite=True) == n_scored
        assert reader.read() == b'{"old": 1}\n'
    recs = read_jsonl(out)
    assert len(recs) == n_scored and all(set(CONF_COLUMNS) <= set(r) for r in recs)
    assert {r["split"] for r in recs} == {"confident", "unconfident"}
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]  # no temporary left


def test_overwrite_replaces_a_saved_dataset(workdir, n_scored):
    from datasets import load_from_disk

    table, ds = workdir / "run.duckdb", workdir / "confident"
    n_conf = export_split(table, ds, split="confident")
    assert 0 < n_conf < n_scored and load_from_disk(str(ds)).num_rows == n_conf
    with pytest.raises(SftmixError, match="confident exists \\(a saved dataset\\); pass --overwrite"):
        export_split(table, ds, split="all")
    assert export_split(table, ds, split="all", overwrite=True) == n_scored
    reloaded = load_from_disk(str(ds))
    assert reloaded.num_rows == n_scored and set(reloaded["split"]) == {"confident", "unconfident"}
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")]
    # An empty directory is replaced too, with overwrite.
    (workdir / "empty").mkdir()
    with pytest.raises(SftmixError, match="empty exists \\(an empty directory\\)"):
        export_split(table, workdir / "empty")
    assert export_split(table, workdir / "empty", split="unconfident", overwrite=True) == n_scored - n_conf
    assert load_from_disk(str(workdir / "empty")).num_rows == n_scored - n_conf


def test_cli_overwrite_flag(workdir, n_scored, capsys):
    # Checks the `--overwrite` flag of `sftmix export` (cli.py / ExportOptions).
    out = workdir / "out.jsonl"
    out.write_text('{"old": 1}\n')
    refused(["export", str(workdir / "run.duckdb"), "-o", str(out)], capsys, "exists; pass --overwrite")
    assert out.read_text() == '{"old": 1}\n'
    assert main(["export", str(workdir / "run.duckdb"), "-o", str(out), "--overwrite"]) == 0
    assert f"wrote {n_scored} examples" in capsys.readouterr().out
    assert len(read_jsonl(out)) == n_scored


def test_every_format_reads_the_table_in_batches(workdir, n_scored, monkeypatch):
    """A batch of two records at a time writes what one batch of all of them writes, in every format."""
    from datasets import load_from_disk

    import profiler.table.records as records

    table = workdir / "run.duckdb"
    whole = {fmt: workdir / f"whole.{fmt}" for fmt in ("jsonl", "json", "parquet")} | {"hf": workdir / "whole"}
    for fmt, out in whole.items():
        assert export_split(table, out, fmt=fmt) == n_scored
    seen = []
    inner = records.export_batches

    def spy(*a, **kw):
        for batch in inner(*a, **kw):
            seen.append(len(batch))
            yield batch

    monkeypatch.setattr(records, "EXPORT_BATCH_ROWS", 2)
    monkeypatch.setattr("profiler.table.reader.export_batches", spy)
    for fmt, out in whole.items():
        part = out.with_name("parts" + out.suffix)
        assert export_split(table, part, fmt=fmt) == n_scored
        if fmt == "parquet":
            assert pl.read_parquet(part).equals(pl.read_parquet(out))
        elif fmt == "hf":
            assert load_from_disk(str(part)).to_list() == load_from_disk(str(out)).to_list()
        else:
            assert part.read_bytes() == out.read_bytes()
    assert max(seen) == 2 and sum(seen) == 4 * n_scored  # read two at a time, every record once per export


# --- the suffix picks the format -----------------------------------------------------------------------------
def test_the_suffix_picks_the_format(workdir, n_scored, capsys):
    table = workdir / "run.duckdb"
    assert main(["export", str(table), "-o", str(workdir / "x.parquet"), "--split", "confident"]) == 0
    frame = pl.read_parquet(workdir / "x.parquet")
    assert set(CONF_COLUMNS) <= set(frame.columns) and set(frame["split"]) == {"confident"}
    assert 0 < frame.height < n_scored
    assert main(["export", str(table), "-o", str(workdir / "x.json")]) == 0
    array = json.loads((workdir / "x.json").read_text(encoding="utf-8"))
    assert isinstance(array, list) and len(array) == n_scored
    assert export_split(table, workdir / "x.jsonl") == n_scored
    assert array == read_jsonl(workdir / "x.jsonl")  # the same records, most confident first
    assert [r["example_id"] for r in array[: frame.height]] == frame["example_id"].to_list()  # confident first
    from datasets import load_from_disk

    assert export_split(table, workdir / "dataset") == n_scored  # no suffix: a saved dataset
    assert load_from_disk(str(workdir / "dataset")).num_rows == n_scored


def test_a_contradicting_or_unknown_suffix_fails(workdir, capsys):
    table = workdir / "run.duckdb"
    before = snapshot(workdir)
    with pytest.raises(SftmixError, match="suffix '.parquet' of parquet, but --format is jsonl"):
        export_split(table, workdir / "x.parquet", fmt="jsonl")
    refused(["export", str(table), "-o", str(workdir / "x.jsonl"), "--format", "hf"], capsys, "--format is hf")
    refused(["export", str(table), "-o", str(workdir / "x.txt")], capsys, "unknown export suffix '.txt'", ".jsonl")
    with pytest.raises(SftmixError, match="is a directory, but --format jsonl writes a file"):
        export_split(table, workdir / "data", fmt="jsonl", overwrite=True)
    assert snapshot(workdir) == before


# --- atomic: a failed export leaves the old output -----------------------------------------------------------
def test_a_failed_export_leaves_the_old_file_and_no_temporary(workdir, monkeypatch):
    out = workdir / "out.jsonl"
    out.write_text('{"old": 1}\n')
    before = snapshot(workdir)

    def write_half_then_fail(records, f):
        f.write(json.dumps(records[0]) + "\n")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export_mod, "write_jsonl", write_half_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_split(workdir / "run.duckdb", out, overwrite=True)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_split(workdir / "run.duckdb", workdir / "new.jsonl")
    assert snapshot(workdir) == before


def test_a_failed_dataset_export_keeps_the_old_dataset(workdir, monkeypatch):
    from datasets import Dataset, load_from_disk

    table, ds = workdir / "run.duckdb", workdir / "ds"
    n_conf = export_split(table, ds, split="confident")
    before = snapshot(workdir)
    save = Dataset.save_to_disk

    def save_then_fail(self, path, *args, **kwargs):
        save(self, path, *args, **kwargs)
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(Dataset, "save_to_disk", save_then_fail)
    with pytest.raises(RuntimeError, match="killed while saving"):
        export_split(table, ds, overwrite=True)
    assert snapshot(workdir) == before
    monkeypatch.setattr(Dataset, "save_to_disk", save)
    # The swap itself fails: the new directory cannot be renamed in, so the old one is put back.
    rename = os.rename

    def failing_rename(src, dst):
        if Path(src).name.startswith(".ds.tmp-"):
            raise OSError(errno.EIO, "I/O error")
        return rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(SftmixError, match="cannot write .*ds: I/O error"):
        export_split(table, ds, overwrite=True)
    monkeypatch.setattr(os, "rename", rename)
    assert snapshot(workdir) == before
    assert load_from_disk(str(ds)).num_rows == n_conf


# --- an unfinished table is refused with its stage -----------------------------------------------------------
def test_an_unfinished_table_is_refused_with_its_stage(tmp_path, capsys):
    table = tmp_path / "run.duckdb"
    with TableWriter(table) as w:
        w.set_meta({"stages": {"data": "done", "finetune": "done"}})
    refused(
        ["export", str(table), "-o", str(tmp_path / "out.jsonl")],
        capsys,
        f"{table} is not finished: scoring has not completed (stages done: data, finetune); "
        "re-run `sftmix profile` with the same --out to finish it",
    )
    fresh = tmp_path / "fresh.duckdb"
    TableWriter(fresh).close()
    with pytest.raises(SftmixError, match=r"the data stage has not completed \(stages done: none\)"):
        export_split(fresh, tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.duckdb", "run.duckdb"]


def test_a_shard_part_file_is_refused_with_merge(tmp_path, capsys):
    part = tmp_path / "run.part-1-of-2.duckdb"
    with TableWriter(part) as w:
        w.set_meta({"shard": {"index": 1, "count": 2}, "shard_complete": True, "stages": {"data": "done"}})
    err = refused(["export", str(part), "-o", str(tmp_path / "out.jsonl")], capsys, "shard part file (shard 1 of 2)")
    assert f"`sftmix merge {tmp_path / 'run.duckdb'}`" in err
    assert not (tmp_path / "out.jsonl").exists()
