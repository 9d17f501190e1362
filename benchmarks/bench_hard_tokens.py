"""Hard tokens under a filter: the token index's build and its totals, against counting in DuckDB.

    python benchmarks/bench_hard_tokens.py --table /tmp/dash1m/run.duckdb [--dense]

On a profile with token scores (``synthetic.py --n 1000000 --token-scores last --ifd``), with the points cached as
the pages have them: the time to build the token index; the totals under a one-source filter over the page's
sample (``queries.TOKEN_SAMPLE``), over every matching example, and over the whole table, from the index; and the
same filter counted without the index (``--scan``: one pass over the token lists per call, as before the index).
``--dense`` also times the index's totals on random arrays of real-text density (1M examples of ~80 distinct keys
each, 40,000 keys), which the synthetic profile's 20-word vocabulary does not reach.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_first_page import cpu_model

from dashboard import queries
from dashboard.cache import TableCache
from dashboard.queries import Filter
from dashboard.token_index import TokenIndex
from profiler import open_table


def timed(label: str, fn, repeats: int = 2):
    out = None
    for rep in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        print(f"| {label} | {rep + 1} | {time.perf_counter() - t0:.2f} s |", flush=True)
    return out


def dense() -> None:
    rng = np.random.default_rng(0)
    n, per, size = 1_000_000, 80, 40_000
    length = rng.integers(per // 2, per * 3 // 2, n).astype(np.int32)
    start = (np.cumsum(length) - length).astype(np.int64)
    entries = int(length.sum())
    key = (rng.zipf(1.2, entries) % size).astype(np.int32)
    index = TokenIndex(
        [f"k{i:05d}" for i in range(size)],
        start,
        length,
        key,
        np.ones(entries, np.int32),
        rng.gamma(2.0, 1.0, entries).astype(np.float32),
    )
    print(f"\ndense arrays: {n:,} examples, {entries:,} entries, {size:,} keys\n")
    print("| totals | repeat | time |\n|---|---|---|")
    for label, rows in (
        (f"a sample of {queries.TOKEN_SAMPLE:,}", rng.choice(n, queries.TOKEN_SAMPLE, replace=False)),
        ("333,334 examples", rng.choice(n, 333_334, replace=False)),
        ("every example", None),
    ):
        timed(label, lambda rows=rows: index.totals(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--scan", action="store_true", help="also count the filter without the index (slow at 1M)")
    ap.add_argument("--dense", action="store_true", help="also time totals on arrays of real-text density")
    args = ap.parse_args()
    print(f"{cpu_model()}, {args.table}\n\n| step | repeat | time |\n|---|---|---|")
    with open_table(args.table) as t:
        TableCache(t).need("points")
        con = t.cursor()
        index = timed("build the token index", lambda: queries.token_index(con), repeats=1)
        source = con.execute("SELECT source FROM example_view GROUP BY 1 ORDER BY count(*) DESC, 1").fetchall()[0][0]
        flt = Filter(sources=(source,))
        matching = queries.count(con, flt)
        timed(
            f"filter {source!r}: a sample",
            lambda: queries.token_totals(con, flt, sample=queries.TOKEN_SAMPLE, index=index),
        )
        timed(f"filter {source!r}: all {matching:,}", lambda: queries.token_totals(con, flt, index=index))
        timed("whole table", lambda: queries.token_totals(con, index=index))
        if args.scan:
            timed(f"filter {source!r}: all, token lists scanned", lambda: scanned(con, flt, matching))
        print(
            f"\n{len(index.key):,} entries, {len(index.keys):,} keys, {int(np.count_nonzero(index.length)):,} examples"
        )
    if args.dense:
        dense()


def scanned(con, flt: Filter, matching: int):
    """The filter's totals counted in DuckDB without the index: its examples' token lists unnested and grouped."""
    rel, where, params = queries._filtered(con, flt)
    return con.execute(
        f"""
        SELECT tok, count(*), sum(nll) FROM (
            SELECT unnest(tokens) AS tok, unnest(nll) AS nll FROM token_view
            WHERE checkpoint_id = (SELECT max(checkpoint_id) FROM token_view)
              AND example_id IN (SELECT example_id FROM {rel} WHERE {where})
        ) GROUP BY tok
        """,
        params,
    ).fetchall()


if __name__ == "__main__":
    main()
