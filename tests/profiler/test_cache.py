"""The rendered-data cache: rendered once, memory-mapped after, the same rows whatever the process count, and
exactly the rows, ids, statuses and errors of the row-by-row loader and renderer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from profiler.data import Renderer, load_examples
from profiler.data import cache as cache_mod
from profiler.data.cache import render_dataset
from profiler.errors import DataError
from profiler.ifd import alone_items
from profiler.scoring.base import ScoreItem
from profiler.scoring.torch_backend import needed_tokens
from profiler.table.writer import EXAMPLE_COLUMNS, TableWriter
from tests.conftest import write_jsonl

GOOD = {"instruction": "Q?", "input": "", "output": "A."}


def _rows(n: int) -> list:
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"instruction": f"Question {i} about permits?", "output": f"Answer {i}: it takes weeks."})
        else:
            turns = [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i} 😀"}]
            rows.append({"messages": turns * (1 + i % 2)})
    return rows


def _bad_rows() -> list:
    return [
        GOOD,
        '{"instruction": "Q?", "output": ',  # malformed
        {"instruction": "Q?"},  # missing output
        GOOD,  # a repeat: id with -1
        '["not", "an", "object"]',
        {"question": "Q?", "answer": "A."},  # unknown format
        {"instruction": "Q?", "output": "word " * 300},  # too long at max_length 64
    ]


@pytest.fixture
def renderer(chat_tokenizer_dir):
    return Renderer(AutoTokenizer.from_pretrained(chat_tokenizer_dir), max_length=64)


def _snapshot(data) -> dict:
    cols = ["example_id", "status", "status_detail", "source", "file_row", "n_prompt_tokens", "n_response_tokens"]
    out = {c: data.column(c) for c in cols}
    out["input_ids"] = [list(x) for x in data.column("input_ids")]
    out["response_mask"] = [list(x) for x in data.column("response_mask")]
    return out


def test_rendered_once_then_mapped_and_same_for_any_process_count(renderer, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", _rows(60))
    first = render_dataset([("d", str(path))], renderer, tmp_path / "one", num_proc=1)
    again = render_dataset([("d", str(path))], renderer, tmp_path / "one", num_proc=1)
    assert first.built and not again.built and again.path == first.path
    monkeypatch.setattr(cache_mod, "ROWS_PER_PROCESS", 10)  # small enough that two workers really fork
    forked = render_dataset([("d", str(path))], renderer, tmp_path / "two", num_proc=2)
    assert len(forked.manifest["files"]) == 2  # one Arrow file per worker
    assert _snapshot(forked) == _snapshot(first) and forked.fingerprint == first.fingerprint
    assert forked.table.schema.field("input_ids").type.value_type == "int32"
    assert forked.table.schema.field("response_mask").type.value_type == "uint8"


def test_same_rows_ids_and_errors_as_the_row_by_row_loader(renderer, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", _bad_rows())
    data = render_dataset([("bad", str(path))], renderer, tmp_path / "c")
    loaded = load_examples([str(path)], on_error="skip")
    rendered = {}
    for r in loaded:  # the renderer's verdict on the rows that load
        if r.example is not None:
            try:
                rendered[r.row_index] = renderer.render(r.example, source_file=r.source_file, row=r.file_row)
            except DataError as e:
                r.status, r.status_detail = e.code, e.describe()
    assert data.column("example_id") == [r.example_id for r in loaded]
    assert data.column("status") == [r.status for r in loaded]
    assert data.column("status_detail") == [r.status_detail for r in loaded]
    assert data.column("status") == [
        "ok",
        "malformed_json",
        "missing_field",
        "ok",
        "not_an_object",
        "unknown_format",
        "too_long",
    ]
    for i, rx in rendered.items():
        assert data.dataset[i]["input_ids"] == rx.input_ids
        assert data.dataset[i]["response_mask"] == [int(m) for m in rx.response_mask]
    with pytest.raises(DataError) as strict:  # the first bad row, as the strict loader raises it
        load_examples([str(path)])
    err = data.first_error()
    assert str(err) == str(strict.value) and (err.code, err.row, err.line) == ("malformed_json", 1, 2)


def test_changed_data_and_a_killed_build_render_again(renderer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", _rows(20))
    first = render_dataset([("d", str(path))], renderer, tmp_path / "c")
    write_jsonl(path, _rows(21))  # the file changed: another key
    changed = render_dataset([("d", str(path))], renderer, tmp_path / "c")
    assert changed.built and changed.path != first.path and changed.n_rows == 21
    # A build killed before its manifest was written leaves a half folder; the next run starts over.
    shutil.rmtree(changed.path)
    half = tmp_path / "c" / f".{changed.path.name}.building"
    half.mkdir()
    (half / "raw.arrow").write_bytes(b"cut short")
    redone = render_dataset([("d", str(path))], renderer, tmp_path / "c")
    assert redone.built and redone.n_rows == 21 and not half.exists()
    assert redone.column("example_id") == changed.column("example_id")


def test_items_read_from_the_cache_equal_the_rendered_examples(renderer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", _rows(30))
    data = render_dataset([("d", str(path))], renderer, tmp_path / "c")
    ok = data.rows_where(ok=True)
    items = data.items(ok)
    loaded = [r for r in load_examples([str(path)]) if r.status == "ok"]
    plain = []
    for r in loaded:
        rx = renderer.render(r.example)
        plain.append(ScoreItem(r.example_id, rx.input_ids, rx.response_mask))
    assert len(items) == len(plain) == len(ok)
    for it, ref in zip(items, plain):
        assert it.example_id == ref.example_id
        assert it.input_ids.tolist() == ref.input_ids and it.response_mask.tolist() == ref.response_mask
    assert items.lengths().tolist() == [len(p.input_ids) for p in plain]
    assert items.lengths(trim=True).tolist() == [len(needed_tokens(p).input_ids) for p in plain]
    some = items.where(lambda eid: eid.endswith(("0", "1", "2", "3")))
    assert some.ids == [p.example_id for p in plain if p.example_id.endswith(("0", "1", "2", "3"))]
    for start in ([], [7]):  # IFD's responses alone: the view and the list agree
        view, ref = alone_items(items, start), alone_items(plain, start)
        assert [a.example_id for a in view] == [a.example_id for a in ref]
        assert [list(a.input_ids) for a in view] == [list(a.input_ids) for a in ref]
        assert view.lengths().tolist() == [len(a.input_ids) for a in ref]


def test_processes_started_together_render_once(chat_tokenizer_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", _rows(40))
    script = (
        "import sys, json; from transformers import AutoTokenizer; from profiler.data import Renderer; "
        "from profiler.data.cache import render_dataset; "
        f"r = Renderer(AutoTokenizer.from_pretrained({str(chat_tokenizer_dir)!r})); "
        f"d = render_dataset([('d', {str(path)!r})], r, {str(tmp_path / 'c')!r}); "
        "print(json.dumps({'built': d.built, 'n': d.n_rows}))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(o["built"] for o in outs) == [False, True] and {o["n"] for o in outs} == {40}


def test_an_examples_insert_cut_short_is_written_again_whole(renderer, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", _rows(25))
    data = render_dataset([("d", str(path))], renderer, tmp_path / "c")
    rows = np.arange(data.n_rows)

    def cut(batches):
        for k, b in enumerate(batches):
            if k == 1:
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(cache_mod, "BATCH_ROWS", 1)  # batches of 10 rows
    with TableWriter(tmp_path / "t.duckdb") as t, pytest.raises(KeyboardInterrupt):
        t.init_examples(cut(data.example_batches(rows, list(EXAMPLE_COLUMNS))), data.fingerprint, {})
    with TableWriter(tmp_path / "t.duckdb") as t:
        assert t.n_examples() == 10  # the first batch committed, the run stopped
        assert t.init_examples(data.example_batches(rows, list(EXAMPLE_COLUMNS)), data.fingerprint, {})
        assert t.n_examples() == 25 and t.get_meta("dataset_fingerprint") == data.fingerprint
        ids = [r[0] for r in t.con.execute("SELECT example_id FROM examples ORDER BY row_index").fetchall()]
        assert ids == data.column("example_id")


def test_cache_dir_sits_beside_the_table(tmp_path):
    from profiler.data.cache import default_cache_root

    assert default_cache_root(tmp_path / "run.duckdb") == tmp_path / "run_data"
    assert default_cache_root(tmp_path / "run.part-3-of-8.duckdb") == tmp_path / "run_data"
    assert default_cache_root("x/y.duckdb") == Path("x/y_data")


def test_a_shards_rows_are_taken_a_slice_at_a_time(renderer, tmp_path, monkeypatch):
    """A shard's rows, spread over the whole cache, are read from bounded slices (a take over a million rows'
    texts overflows Arrow's 32-bit string offsets), and come out as the plain take would give them."""
    import pyarrow as pa

    path = write_jsonl(tmp_path / "d.jsonl", _rows(40))
    data = render_dataset([("d", str(path))], renderer, tmp_path / "c")
    rows = np.array([0, 2, 3, 9, 10, 11, 25, 26, 39])
    monkeypatch.setattr(cache_mod, "TAKE_SPAN", 4)  # slices of 4 rows: [0, 2, 3], [9, 10, 11], [25, 26], [39]
    got = pa.Table.from_batches(list(data.example_batches(rows, list(EXAMPLE_COLUMNS))))
    want = data.table.select([c for c in EXAMPLE_COLUMNS if c != "row_index"]).take(pa.array(rows))
    assert got.column("row_index").to_pylist() == rows.tolist()
    for c in want.column_names:
        assert got.column(c).to_pylist() == want.column(c).to_pylist(), c

    class Recorded:  # the slices the take reads from
        def __init__(self, table):
            self.table, self.calls = table, []

        def slice(self, *a):
            self.calls.append(a)
            return self.table.slice(*a)

    table = Recorded(data.table)
    cache_mod.take_rows(table, rows)
    assert table.calls == [(0, 4), (9, 4), (25, 4), (39, 4)]
