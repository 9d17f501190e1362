"""Dashboard page times on a synthetic profile: each page's script run (queries + figures), warm imports.

    python benchmarks/bench_dashboard.py --n 200000 [--token-scores last --ifd]

Prints one line per page: the first run (cold caches) and a re-run (cached queries, as on a rerun in the browser).
Before them: the time to build the table's dashboard cache (once per table, kept beside it: ``dashboard/cache.py``;
``--cold`` removes a kept one first), and one run of the app on a 1,000-example profile, which pays Streamlit's own
one-time start (its component scan) as a served app pays it before its first page. Browser rendering adds to this;
``bench_pages.py`` measures it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from synthetic import write_synthetic_profile  # benchmarks/synthetic.py

APP = str(Path(__file__).parents[1] / "dashboard" / "app.py")
PAGES = ["overview", "data_map", "semantic_map", "dynamics", "explorer", "hard_tokens", "export"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--table", help="an existing table instead of a synthetic one")
    p.add_argument("--token-scores", choices=("none", "last", "all"), default="none", help="synthetic token scores")
    p.add_argument("--ifd", action="store_true", help="synthetic IFD values")
    p.add_argument("--cold", action="store_true", help="remove the table's kept dashboard cache first")
    args = p.parse_args()
    from streamlit.testing.v1 import AppTest

    import dashboard.figures  # noqa: F401  (warm imports, as in a served app)

    with tempfile.TemporaryDirectory() as tmp:
        table = args.table
        if table is None:
            t0 = time.perf_counter()
            table = str(
                write_synthetic_profile(
                    Path(tmp) / "synthetic.duckdb", args.n, token_scores=args.token_scores, ifd=args.ifd
                )
            )
            print(f"synthetic profile of {args.n:,} examples written in {time.perf_counter() - t0:.1f}s")
        from dashboard.cache import TableCache, cache_dir
        from profiler.table import open_table

        if args.cold:
            shutil.rmtree(cache_dir(table), ignore_errors=True)
        t0 = time.perf_counter()
        with open_table(table) as t:
            TableCache(t).need("points", "deciles", "token_checkpoints")
        print(f"dashboard cache of the table (once per table): {time.perf_counter() - t0:.2f}s")
        small = write_synthetic_profile(Path(tmp) / "small.duckdb", 1_000)
        os.environ["SFTMIX_TABLE"] = str(small)
        AppTest.from_file(APP, default_timeout=120).run()  # Streamlit's one-time start
        os.environ["SFTMIX_TABLE"] = table
        at = AppTest.from_file(APP, default_timeout=120)
        for page in PAGES:
            if page != "overview":
                at.switch_page(f"views/{page}.py")
            t0 = time.perf_counter()
            at.run()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            at.run()
            again = time.perf_counter() - t0
            errors = [str(e.value)[:200] for e in at.exception]
            print(f"{page:14} first {first:6.2f}s   rerun {again:6.2f}s" + (f"   ERRORS {errors}" if errors else ""))


if __name__ == "__main__":
    main()
