"""The DuckDB table: round trip, resume after a crash, and refusal of mismatched runs."""

from __future__ import annotations

import duckdb
import pytest

from profiler import open_table
from profiler.config import ScoreConfig
from profiler.errors import DataError, TableError
from profiler.pipeline import run_score
from profiler.table import SCHEMA_VERSION, TableWriter
from tests.conftest import ALPACA_ROWS, write_jsonl


def config(model, data, out, **kw):
    return ScoreConfig(model=str(model), data=[str(d) for d in data], out=str(out), progress=False, **kw)


def table_state(path):
    with open_table(path) as t:
        return (
            t.examples.drop("status_detail").sort("example_id").rows(),
            t.scores.select("example_id", "checkpoint_id", "nll_sum", "n_tokens")
            .sort("example_id", "checkpoint_id")
            .rows(),
            t.confidence.rows(),
        )


def test_round_trip(tiny_llama, alpaca_file, chat_file, tmp_path):
    out = run_score(config(tiny_llama, [alpaca_file, chat_file], tmp_path / "run.duckdb"))
    with open_table(out) as t:
        assert t.meta["schema_version"] == SCHEMA_VERSION == "1.1"
        assert t.meta["score_config"]["model"] == str(tiny_llama)
        assert t.examples.height == len(ALPACA_ROWS) + 2
        assert t.examples["status"].to_list() == ["ok"] * t.examples.height
        assert t.checkpoints.height == 1 and t.checkpoints["kind"][0] == "model"
        assert t.scores.height == t.examples.height
        s = t.scores.to_dicts()[0]
        assert s["mean_nll"] == pytest.approx(s["nll_sum"] / s["n_tokens"])
        assert t.confidence.height == t.examples.height
        summary = t.summary()
        assert summary["splits"] == {"confident": 4, "unconfident": 5}
        assert summary["sources"] == {"alpaca": 7, "chat": 2}
        assert summary["token_scores"] == 9 and summary["ifd"]["examples"] == 9  # the last (only) checkpoint
        assert summary["ifd"]["median"] == pytest.approx(t.ifd["ifd"].median())


def test_resume_after_crash_gives_the_same_table(tiny_llama, alpaca_file, chat_file, tmp_path):
    data = [alpaca_file, chat_file]
    ref = run_score(config(tiny_llama, data, tmp_path / "ref.duckdb", max_tokens=64))
    crashed = tmp_path / "crashed.duckdb"
    with pytest.raises(RuntimeError, match="test hook"):
        run_score(config(tiny_llama, data, crashed, max_tokens=64), stop_after_batches=2)
    with open_table(crashed) as t:
        partial = t.scores.height
        assert 0 < partial < len(ALPACA_ROWS) + 2
        assert t.confidence.height == 0
    run_score(config(tiny_llama, data, crashed, max_tokens=64))
    assert table_state(crashed) == table_state(ref)


def test_rerun_skips_scored_pairs(tiny_llama, alpaca_file, tmp_path, monkeypatch):
    out = run_score(config(tiny_llama, [alpaca_file], tmp_path / "run.duckdb"))
    import profiler.hf as sr

    def boom(*a, **k):
        raise AssertionError("nothing should be re-scored")

    monkeypatch.setattr(sr, "load_causal_lm", boom)
    run_score(config(tiny_llama, [alpaca_file], out))


def test_changed_data_or_settings_are_refused(tiny_llama, alpaca_file, tmp_path):
    out = run_score(config(tiny_llama, [alpaca_file], tmp_path / "run.duckdb"))
    changed = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA_ROWS[:-1])
    with pytest.raises(TableError, match="other data"):
        run_score(config(tiny_llama, [changed], out))
    write_jsonl(tmp_path / "alpaca.jsonl", ALPACA_ROWS)
    with pytest.raises(TableError, match="other settings.*max_length"):
        run_score(config(tiny_llama, [alpaca_file], out, max_length=64))


def test_other_schema_major_is_refused(tmp_path):
    path = tmp_path / "t.duckdb"
    TableWriter(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '\"2.0\"' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(TableError, match="schema version 2.0"):
        open_table(path)
    with pytest.raises(TableError, match="not an sftmix confidence table"):
        duckdb.connect(str(tmp_path / "other.duckdb")).execute("CREATE TABLE x (a INT)").close()
        open_table(tmp_path / "other.duckdb")


def test_bad_rows_are_kept_with_their_reason(tiny_llama, tmp_path):
    rows = ALPACA_ROWS[:3] + ['{"broken', {"instruction": "Q", "output": "word " * 400}]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    out = run_score(config(tiny_llama, [data], tmp_path / "run.duckdb", on_error="skip", max_length=128))
    with open_table(out) as t:
        ex = t.examples
        assert ex.height == 5  # every input row is in the table
        assert ex["status"].to_list() == ["ok", "ok", "ok", "malformed_json", "too_long"]
        assert "mixed.jsonl, row 3 (line 4)" in ex["status_detail"][3]
        assert t.scores.height == 3 and t.confidence.height == 3
    strict = write_jsonl(tmp_path / "long.jsonl", ALPACA_ROWS[:3] + rows[-1:])
    with pytest.raises(DataError, match=r"long.jsonl, row 3: example has \d+ tokens, more than max_length=128"):
        run_score(config(tiny_llama, [strict], tmp_path / "strict.duckdb", max_length=128))


def _snapshot(root):
    """Every file under ``root`` with its bytes: what 'untouched' means."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _foreign(tmp_path, kind):
    path = tmp_path / "x.duckdb"
    if kind == "text":
        path.write_text("someone's notes\n")
    elif kind == "empty":
        path.touch()
    elif kind == "directory":
        path.mkdir()
        (path / "keep.txt").write_text("mine")
    elif kind == "other_db":
        con = duckdb.connect(str(path))
        con.execute("CREATE TABLE examples (a INT); CREATE TABLE foo (b INT); INSERT INTO foo VALUES (1)")
        con.close()
    elif kind == "no_tables":
        duckdb.connect(str(path)).close()
    elif kind == "other_meta":  # a 'meta' table, but not ours: no schema_version in it
        con = duckdb.connect(str(path))
        con.execute("CREATE TABLE meta (key VARCHAR, value JSON); INSERT INTO meta VALUES ('owner', '\"them\"')")
        con.close()
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("text", r"x.duckdb is not a DuckDB file, so not an sftmix table; refusing to write into it\. Use a new --out"),
        ("empty", r"x.duckdb is an empty file, not an sftmix table; refusing to write into it"),
        ("directory", r"x.duckdb is a directory, not an sftmix table; refusing to write into it"),
        (
            "other_db",
            r"x.duckdb is a DuckDB database that is not an sftmix table \(tables: examples, foo\); "
            r"refusing to write into it\. Use a new --out\.$",
        ),
        ("no_tables", r"not an sftmix table \(tables: none\)"),
        ("other_meta", r"not an sftmix table \(tables: meta\)"),
    ],
)
def test_only_sftmix_tables_are_written(tmp_path, kind, message):
    from profiler.table import check_output_table

    path = _foreign(tmp_path, kind)
    before = _snapshot(tmp_path)
    for attempt in (check_output_table, TableWriter):
        with pytest.raises(TableError, match=message) as info:
            attempt(path)
        assert "\n" not in str(info.value)
        assert _snapshot(tmp_path) == before  # untouched: no schema, no WAL beside it
    assert path.is_dir() == (kind == "directory")


def test_own_tables_and_parts_are_written(tmp_path):
    from profiler.pipeline.shards import part_path
    from profiler.table import check_output_table

    check_output_table(tmp_path / "new.duckdb")  # a new path is fine, and nothing is created by the check
    assert not (tmp_path / "new.duckdb").exists()
    part = part_path(tmp_path / "run.duckdb", 1, 4)
    with TableWriter(part) as t:
        t.set_meta({"shard": {"index": 1, "count": 4}, "shard_complete": False})
    check_output_table(part)
    with TableWriter(part) as t:  # a resumed shard reopens its part
        assert t.get_meta("shard") == {"index": 1, "count": 4}
    TableWriter(tmp_path / "t.duckdb").close()
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    con.execute("UPDATE meta SET value = '\"2.0\"' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(TableError, match="schema version 2.0"):
        check_output_table(tmp_path / "t.duckdb")


HOLD = """
import sys, time
from profiler.table import SCHEMA_VERSION, TableWriter
t = TableWriter(sys.argv[1])
print("open", flush=True)
time.sleep(120)
"""


def test_a_table_held_by_another_process_is_named(tmp_path):
    import subprocess
    import sys

    from profiler.table import check_output_table

    path = tmp_path / "x.duckdb"
    TableWriter(path).close()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        held = rf"x.duckdb is in use by another process \(PID {proc.pid}: [^)]*python[^)]*\); "
        advice = r"if it is an sftmix run writing this table, wait for it to finish or stop it \(it resumes\)"
        with pytest.raises(TableError, match=held + advice + "$"):
            open_table(path)
        for attempt in (TableWriter, check_output_table):
            with pytest.raises(TableError, match=held + advice + ", or write to another --out$"):
                attempt(path)
    finally:
        proc.kill()
        proc.wait()
    with open_table(path) as t:  # free again
        assert t.meta["schema_version"] == SCHEMA_VERSION


def test_reader_export_records_and_split_examples(small_profile):
    import json

    from profiler.table.records import CONF_COLUMNS

    with open_table(small_profile) as t:
        conf, ex = t.confidence, t.examples
        records = t.export_records()
        assert [r["example_id"] for r in records] == conf["example_id"].to_list()  # most confident first
        conf_row = {r["example_id"]: r for r in conf.iter_rows(named=True)}
        ex_row = {r["example_id"]: r for r in ex.iter_rows(named=True)}
        ifd = dict(t.ifd.select("example_id", "ifd").rows())
        assert ifd
        for rec in records:  # each column read by its own name, and the original fields untouched
            i = rec["example_id"]
            original = json.loads(ex_row[i]["record"])
            expected = {**conf_row[i], "source": ex_row[i]["source"], "ifd": ifd.get(i)}
            for c in CONF_COLUMNS:
                assert rec[f"sftmix_{c}" if c in original else c] == expected[c], c
            assert {k: v for k, v in rec.items() if k in original} == original
        for split in ("confident", "unconfident"):
            part = t.export_records(split)
            assert {r["split"] for r in part} == {split} and len(part) == conf.filter(conf["split"] == split).height
        with pytest.raises(ValueError, match="split must be one of"):
            t.export_records("unscored")
        assert "messages" in records[0]  # the original fields
        from profiler.export import split_frame, split_records
        from profiler.table.records import records_frame

        for split in ("all", "confident", "unconfident"):  # `sftmix export` writes exactly these records
            assert t.export_records(split) == split_records(small_profile, split)
            assert split_frame(small_profile, split).equals(records_frame(t.export_records(split)))
        split_ex = t.split_examples()
        ordered = ex.filter(ex["example_id"].is_in(conf["example_id"].implode()))["example_id"].to_list()
        assert split_ex["example_id"].to_list() == ordered  # input order
        assert split_ex.columns == ["example_id", "messages", "record", "split"]
        assert t.scored_examples()["example_id"].to_list() == conf["example_id"].to_list()


def test_ctrl_c_during_a_write_ends_the_run_after_the_write_is_whole(tmp_path, monkeypatch):
    """Ctrl-C inside a write once landed in polars code that DuckDB called back (a Rust panic with a backtrace
    on stderr); it is now held until the write commits, and then raised."""
    import os
    import signal

    import polars as pl

    from profiler.table.writer import CheckpointInfo

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with TableWriter(tmp_path / "t.duckdb") as t:
            (cid,) = t.register_checkpoints([CheckpointInfo("m", 1, 1.0)])
            insert = t._insert
            calls = []

            def interrupted_insert(table, frame, columns=None):
                calls.append(table)
                if len(calls) == 1:  # after the scores, before the token NLLs
                    os.kill(os.getpid(), signal.SIGINT)
                insert(table, frame, columns)

            monkeypatch.setattr(t, "_insert", interrupted_insert)
            scores = pl.DataFrame(
                {
                    "example_id": ["a", "b"],
                    "nll_sum": [3.0, 1.5],
                    "n_tokens": [2, 3],
                    "token_nll": [[1.0, 2.0], [0.5, 0.5, 0.5]],
                }
            )
            with pytest.raises(KeyboardInterrupt):
                t.write_scores(cid, scores, tokens={"a": ["x", "y"], "b": ["p", "q", "r"]})
            assert calls == ["scores", "token_scores", "example_tokens"]  # nothing was cut short
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            assert t.n_scores() == 2
            assert t.token_scored_ids(cid) == {"a", "b"}
            assert t.tokenized_ids() == {"a", "b"}
    finally:
        signal.signal(signal.SIGINT, previous)


def test_scores_committed_before_a_kill_are_in_the_table(tmp_path):
    """The writer checkpoints its log only every WRITER_CHECKPOINT_THRESHOLD: what a killed process committed
    lives in the log, and the next open replays it, token NLLs and texts included."""
    import subprocess
    import sys

    from profiler.table.writer import TableWriter

    path = tmp_path / "t.duckdb"
    script = f"""
import os
import polars as pl
from profiler.table.writer import CheckpointInfo, TableWriter
w = TableWriter({str(path)!r})
cid = w.register_checkpoints([CheckpointInfo("ckpt-1", 1, 1.0)])[0]
frame = pl.DataFrame({{"example_id": ["a", "b"], "nll_sum": [1.5, 3.0], "n_tokens": [2, 3],
                      "token_nll": [[0.5, 1.0], [1.0, 1.0, 1.0]]}})
w.write_scores(cid, frame, {{"a": ["x", "y"], "b": ["p", "q", "r"]}})
os._exit(9)  # no close, no checkpoint
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    assert path.with_name("t.duckdb.wal").stat().st_size > 0  # the writes are in the log only
    with TableWriter(path) as table:
        assert table.con.execute("SELECT example_id, n_tokens FROM scores ORDER BY 1").fetchall() == [
            ("a", 2),
            ("b", 3),
        ]
        rows = table.con.execute(
            "SELECT t.example_id, t.nll, x.tokens FROM token_scores t JOIN example_tokens x USING (example_id) "
            "ORDER BY 1"
        ).fetchall()
        assert rows == [("a", [0.5, 1.0], ["x", "y"]), ("b", [1.0, 1.0, 1.0], ["p", "q", "r"])]
