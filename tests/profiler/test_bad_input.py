"""Bad input: a clear error naming file, row and field, or with on_error='skip' a row that says why."""

from __future__ import annotations

import pytest

from profiler.data import load_examples
from profiler.errors import DataError
from tests.conftest import write_jsonl

GOOD = {"instruction": "Q?", "input": "", "output": "A."}
BAD_ROWS = [
    ('{"instruction": "Q?", "output": ', "malformed_json", None),
    ({"instruction": "Q?"}, "missing_field", "output"),
    ({"instruction": "Q?", "output": 3}, "not_a_string", "output"),
    ({"instruction": "Q?", "output": "   "}, "empty_field", "output"),
    ('["not", "an", "object"]', "not_an_object", None),
]


@pytest.mark.parametrize("bad,code,field", BAD_ROWS)
def test_bad_row_raises_with_file_row_and_field(tmp_path, bad, code, field):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, "", bad, GOOD])  # a blank line is not a row
    with pytest.raises(DataError) as info:
        load_examples([str(path)])
    err = info.value
    assert (err.code, err.row, err.line, err.field) == (code, 1, 3, field)
    msg = str(err)
    assert "data.jsonl" in msg and "row 1 (line 3)" in msg
    if field:
        assert f"field '{field}'" in msg


@pytest.mark.parametrize("bad,code,field", BAD_ROWS)
def test_bad_row_skipped_is_accounted_for(tmp_path, bad, code, field):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, bad, GOOD])
    rows = load_examples([str(path)], on_error="skip")
    assert [r.status for r in rows] == ["ok", code, "ok"]
    assert rows[1].example is None and "data.jsonl" in rows[1].status_detail
    assert len({r.example_id for r in rows}) == 3  # the duplicate good row and the bad row all have ids


def test_chat_errors_name_the_message(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user", "content": "Hi"}]},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    out = load_examples([str(path)], on_error="skip")
    assert [r.status for r in out] == ["not_a_string", "invalid_field", "no_response"]
    assert "field 'messages[1].content'" in out[0].status_detail
    assert "field 'messages[1].role'" in out[1].status_detail


def test_empty_and_unknown(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.jsonl: the file is empty"):
        load_examples([str(empty)])
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    with pytest.raises(DataError, match="has no rows"):
        load_examples([str(blank)])
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "Q?", "answer": "A."}])
    with pytest.raises(DataError, match=r"odd.jsonl, row 0 \(line 1\): unknown format.*'answer', 'question'"):
        load_examples([str(odd)])
    with pytest.raises(DataError, match="unknown file type '.txt'"):
        (tmp_path / "x.txt").write_text("hi")
        load_examples([str(tmp_path / "x.txt")])
    with pytest.raises(DataError, match="no such file"):
        load_examples([str(tmp_path / "missing.jsonl")])


def test_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"instruction": "Q?", "output": "A."}\n{"instruction": "caf\xe9", "output": "A."}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl, row 1 \(line 2\): not UTF-8 text"):
        load_examples([str(path)])
    rows = load_examples([str(path)], on_error="skip")
    assert [r.status for r in rows] == ["ok", "not_utf8"]
