"""Loading, format detection, normalization and stable ids."""

from __future__ import annotations

import json

import polars as pl
import pytest

from profiler.data import detect_format, load_examples, normalize_record
from profiler.data.load import parse_source_spec
from profiler.errors import DataError
from tests.conftest import ALPACA_ROWS, write_jsonl


def test_formats_normalize_to_the_same_messages():
    expected = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]
    recs = {
        "alpaca": {"instruction": "Q?", "input": "", "output": "A."},
        "prompt_completion": {"prompt": "Q?", "completion": "A."},
        "chat": {"messages": expected},
        "sharegpt": {"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]},
    }
    for fmt, rec in recs.items():
        assert detect_format(rec) == fmt
        assert normalize_record(rec, fmt).messages == expected
    # The 'response' spelling of prompt/completion, and an Alpaca input joined to its instruction.
    assert normalize_record({"prompt": "Q?", "response": "A."}, "prompt_completion").messages == expected
    ex = normalize_record({"instruction": "Q?", "input": "ctx", "output": "A.", "system": "S"}, "alpaca")
    assert ex.messages[0] == {"role": "system", "content": "S"}
    assert ex.messages[1]["content"] == "Q?\n\nctx"


def test_field_overrides_and_ids_across_formats(tmp_path):
    faq = write_jsonl(tmp_path / "faq.jsonl", [{"q": "Q?", "a": "A."}, {"q": "Q2?", "a": "A2."}])
    share = write_jsonl(
        tmp_path / "share.jsonl",
        [{"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]}],
    )
    rows = load_examples([str(faq)], fmt="alpaca", fields={"instruction": "q", "output": "a"})
    assert [r.example.response_text for r in rows] == ["A.", "A2."]
    other = load_examples([str(share)])
    assert other[0].example_id == rows[0].example_id  # same content, same id, whatever the file format


def test_ids_are_stable_and_duplicates_distinct(alpaca_file, tmp_path):
    rows = load_examples([str(alpaca_file)])
    ids = [r.example_id for r in rows]
    assert len(set(ids)) == len(ids) == len(ALPACA_ROWS)
    assert ids[5] == ids[0] + "-1"  # row 5 repeats row 0
    assert [r.example_id for r in load_examples([str(alpaca_file)])] == ids
    # Re-ordered data keeps each example's id.
    shuffled = write_jsonl(tmp_path / "rev.jsonl", list(reversed(ALPACA_ROWS[1:5])))
    assert {r.example_id for r in load_examples([str(shuffled)])} == set(ids[1:5])


@pytest.mark.parametrize("kind", ["json", "parquet", "csv", "hf"])
def test_file_kinds(tmp_path, kind):
    rows = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in ALPACA_ROWS]
    if kind == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(rows))
    elif kind == "parquet":
        path = tmp_path / "d.parquet"
        pl.DataFrame(rows).write_parquet(path)
    elif kind == "csv":
        path = tmp_path / "d.csv"
        pl.DataFrame(rows).write_csv(path)
    else:
        from datasets import Dataset, DatasetDict

        path = tmp_path / "d_hf"
        DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
    loaded = load_examples([f"mine={path}"])
    assert [r.source for r in loaded] == ["mine"] * len(rows)
    assert [r.example.response_text for r in loaded] == [r["output"] for r in rows]
    jsonl = write_jsonl(tmp_path / "ref.jsonl", rows)
    assert [r.example_id for r in loaded] == [r.example_id for r in load_examples([str(jsonl)])]


def test_sources_and_row_indices(alpaca_file, chat_file):
    rows = load_examples([str(alpaca_file), f"dialogs={chat_file}"])
    assert [r.row_index for r in rows] == list(range(len(rows)))
    assert {r.source for r in rows} == {"alpaca", "dialogs"}
    assert rows[-2].example.messages[0]["role"] == "system"
    assert parse_source_spec("a/b/c.jsonl") == ("c", "a/b/c.jsonl")


def test_prompt_and_response_text_of_multi_turn(chat_file):
    ex = load_examples([str(chat_file)])[0].example
    assert ex.response_text == "Fine, thanks."
    assert ex.prompt_text == "user: Hi\n\nassistant: Hello.\n\nuser: How are you?"


def test_hub_name_that_is_not_there():
    with pytest.raises(DataError, match="no-such-org/no-such-data"):
        load_examples(["no-such-org/no-such-data"])
