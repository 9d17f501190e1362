"""The token index (dashboard.token_index): totals over any set of examples equal a direct count of their token
lists, whatever order and batches the rows come in; and the pages' cache keeps it beside the table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from dashboard import queries
from dashboard.cache import TableCache
from dashboard.queries import Filter
from dashboard.token_index import build
from profiler import open_table

WORDS = [" the", "the", "\n", " ", "Zaragoza", " 42", "42", "\t", "", "<b>", "é", "x"]


def synthetic_rows(seed: int = 0, rows: int = 300):
    """Token rows (row_index, nll, tokens) with the cases the index must handle: rows with no tokens, rows whose
    token texts are missing, rows whose lists differ in length, tokens of empty key, repeated tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for r in rng.permutation(rows).tolist():
        size = int(rng.integers(0, 30))
        tokens = [WORDS[i] for i in rng.integers(0, len(WORDS), size)]
        nll = rng.gamma(2.0, 1.0, size).astype(np.float32).tolist()
        if r % 17 == 3:
            tokens = None  # no token texts stored
        elif r % 19 == 5 and size:
            nll = nll[:-1]  # the lists disagree: nothing of this row is counted
        out.append((r, nll, tokens))
    return out, rows + 5  # row indices past the last row hold nothing


def batches(rows, size: int) -> list[pa.RecordBatch]:
    schema = pa.schema([("row_index", pa.int64()), ("nll", pa.list_(pa.float32())), ("tokens", pa.list_(pa.string()))])
    return [
        pa.RecordBatch.from_pylist(
            [{"row_index": r, "nll": n, "tokens": t} for r, n, t in rows[i : i + size]], schema=schema
        )
        for i in range(0, len(rows), size)
    ]


def direct(rows, chosen: set[int] | None):
    """(occurrences, NLL sum, examples) by key, and how many examples hold a key, counted in Python."""
    n, s, ex = defaultdict(int), defaultdict(float), defaultdict(set)
    for r, nll, tokens in rows:
        if (chosen is not None and r not in chosen) or tokens is None or len(tokens) != len(nll):
            continue
        for tok, v in zip(tokens, nll):
            key = queries.token_key(tok)
            if key:
                n[key] += 1
                s[key] += v
                ex[key].add(r)
    holding = len(set().union(*ex.values())) if ex else 0
    return {k: (n[k], s[k], len(ex[k])) for k in n}, holding


def as_dict(frame):
    return {r["token"]: (r["n"], r["s"], r["examples"]) for r in frame.iter_rows(named=True)}


def test_totals_equal_a_direct_count_for_any_rows_and_any_batching():
    rows, size = synthetic_rows()
    one = build(batches(rows, 1000), size, queries.token_key, {"checkpoint_id": 2})
    other = build(batches(list(reversed(rows)), 7), size, queries.token_key, {"checkpoint_id": 2})
    assert one.keys == other.keys == sorted(one.keys) and "" not in one.keys
    rng = np.random.default_rng(1)
    subsets = [None, np.array([], dtype=np.int64), np.arange(size), rng.choice(size, 40, replace=False)]
    for chosen in subsets + [np.array([size + 10, -1, 3])]:  # out of range rows hold nothing
        want, holding = direct(rows, None if chosen is None else set(chosen.tolist()))
        for index in (one, other):
            frame, examples = index.totals(chosen)
            got = as_dict(frame)
            assert got.keys() == want.keys() and frame["token"].to_list() == sorted(want)
            for key, (n, s, ex) in want.items():
                assert got[key][0] == n and got[key][2] == ex
                assert got[key][1] == pytest.approx(s, rel=1e-5)
            assert examples == holding
    assert one.totals(np.array([], dtype=np.int64))[0].is_empty()


def test_the_pages_cache_keeps_the_index_beside_the_table(token_profile, tmp_path):
    path = tmp_path / "run.duckdb"
    path.write_bytes(token_profile.read_bytes())
    flt = Filter(sources=("chat",))
    with open_table(path) as t:
        kept = TableCache(t)
        kept.need("points")
        built = kept.token_index(lambda: queries.token_index(t.cursor()))
        assert kept.token_index(lambda: pytest.fail("built twice")) is built
        want = queries.token_totals(t.cursor(), flt)  # an index built here, in memory
        assert queries.token_totals(t.cursor(), flt, index=built)[0].equals(want[0])
    files = sorted(p.name for p in kept.folder.iterdir() if p.name.startswith("token_index"))
    assert files == ["token_index.json"] + [f"token_index_{a}.npy" for a in ("key", "length", "n", "s", "start")]
    with open_table(path) as t:  # the next server reads it, memory-mapped, and builds nothing
        again = TableCache(t)
        again.need("points")
        read = again.token_index(lambda: pytest.fail("built again"))
        assert isinstance(read.key, np.memmap) and read.keys == built.keys and read.info == built.info
        frame, info = queries.token_totals(t.cursor(), flt, index=read)
        assert frame.equals(want[0]) and info == want[1]


def test_a_folder_that_cannot_be_written_keeps_the_index_in_memory(token_profile, tmp_path):
    path = tmp_path / "run.duckdb"
    path.write_bytes(token_profile.read_bytes())
    (tmp_path / "run.duckdb.dashboard").write_text("a file where the cache's folder would be")  # mkdir fails
    with open_table(path) as t:
        kept = TableCache(t)
        index = kept.token_index(lambda: queries.token_index(t.cursor()))
        assert kept.folder is None and not isinstance(index.key, np.memmap)
        assert queries.token_totals(t.cursor(), index=index)[0].height == len(index.keys)
