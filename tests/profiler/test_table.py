"""The DuckDB table: round trip, resume after a crash, and refusal of mismatched runs."""

from __future__ import annotations

import duckdb
import pytest

from profiler import open_table
from profiler.errors import DataError, TableError
from profiler.score_run import ScoreConfig, run_score
from profiler.table import TableWriter
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
        assert t.meta["schema_version"] == "1.0"
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
    import profiler.score_run as sr

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
