"""A synthetic profile of any size, generated inside DuckDB: for load tests and trying the dashboard at scale.

`python -m dashboard.synthetic out.duckdb --n 200000` writes a table with the real schema: examples from three
sources, C checkpoints of scores whose perplexity falls over the epoch, the confidence split, and a 2-D map with
clusters. The numbers are random; only their shapes are realistic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from profiler.confidence import compute_confidence
from profiler.table.writer import CheckpointInfo, TableWriter


def write_synthetic_profile(out: str | Path, n: int, *, n_checkpoints: int = 5, seed: float = 0.42) -> Path:
    out = Path(out)
    if out.exists():
        out.unlink()
    with TableWriter(out) as t:
        t.register_checkpoints(
            [
                CheckpointInfo(f"synthetic/checkpoint-{k + 1}", k + 1, (k + 1) / n_checkpoints)
                for k in range(n_checkpoints)
            ]
        )
        con = t.con
        with t.transaction():
            con.execute("SELECT setseed(?)", [seed])
            con.execute(
                """
                INSERT INTO examples (example_id, row_index, source, source_file, file_row, messages, prompt,
                                      response, record, n_prompt_tokens, n_response_tokens, status, truncated)
                SELECT printf('%016x', hash(i)), i, ['alpaca', 'dolly', 'chat'][1 + i % 3],
                       ['alpaca', 'dolly', 'chat'][1 + i % 3] || '.jsonl', i // 3,
                       json_array(json_object('role', 'user', 'content', 'Question number ' || i || ' about topic '
                                              || (i % 17)),
                                  json_object('role', 'assistant', 'content', 'Answer ' || i)),
                       'Question number ' || i || ' about topic ' || (i % 17), 'Answer ' || i,
                       json_object('instruction', 'Question number ' || i, 'output', 'Answer ' || i),
                       10 + i % 50, 5 + i % 200,
                       CASE WHEN i % 997 = 0 THEN 'empty_response' ELSE 'ok' END, false
                FROM range(?) r(i)
                """,
                [n],
            )
            con.execute(
                """
                INSERT INTO scores
                SELECT e.example_id, k.checkpoint_id, x.nll * e.n_response_tokens, e.n_response_tokens, x.nll,
                       exp(x.nll)
                FROM examples e CROSS JOIN checkpoints k,
                     LATERAL (SELECT greatest(0.05, (0.5 + 2.5 * hash(e.example_id, 7) / 18446744073709551615.0)
                              * (1 - 0.5 * k.fraction) + 0.1 * random()) AS nll) x
                WHERE e.status = 'ok'
                """
            )
            con.execute(
                """
                INSERT INTO embeddings (example_id, umap_x, umap_y)
                SELECT example_id, 10 * cos(2 * pi() * (row_index % 17) / 17) + 2 * random(),
                       10 * sin(2 * pi() * (row_index % 17) / 17) + 2 * random()
                FROM examples WHERE status = 'ok'
                """
            )
        ckpts = list(range(n_checkpoints))
        t.write_confidence(compute_confidence(t.scores_frame(), ckpts, 10))
        t.set_meta(
            {
                "reference_model": "synthetic",
                "projection": {"method": "umap", "seed": 0, "fit_on": n},
                "dataset_fingerprint": f"synthetic-{n}",
                "stages": dict.fromkeys(["data", "finetune", "score", "confidence", "embed"], "done"),
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--checkpoints", type=int, default=5)
    args = p.parse_args()
    print(write_synthetic_profile(args.out, args.n, n_checkpoints=args.checkpoints))


if __name__ == "__main__":
    main()
