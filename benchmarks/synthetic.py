"""A synthetic profile of any size: for load tests and trying the dashboard at scale.

    python benchmarks/synthetic.py big.duckdb --n 200000

writes, through the table's writer, a table with the real schema: examples from three sources (every 997th one
unusable), C checkpoints of scores whose perplexity falls over the epoch, the confidence split, and a 2-D map with
clusters. The numbers are random (seeded); only their shapes are realistic. An existing output is replaced only
when it is an sftmix table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from profiler.confidence import compute_confidence
from profiler.table import CheckpointInfo, TableWriter, check_output_table

SOURCES = ("alpaca", "dolly", "chat")
TOPICS = 17  # clusters on the map


def synthetic_examples(n: int) -> pl.DataFrame:
    """The ``examples`` rows: three sources in turn, chat messages, the original record; every 997th unusable."""
    i = pl.int_range(0, n, dtype=pl.Int64, eager=True).alias("i")
    frame = pl.DataFrame(i).with_columns(
        source=pl.lit(pl.Series(SOURCES)).get(pl.col("i") % 3),
        topic=pl.col("i") % TOPICS,
    )
    prompt = pl.format("Question number {} about topic {}", "i", "topic")
    answer = pl.format("Answer {}", "i")
    return frame.select(
        example_id=pl.format("syn{}", pl.col("i").cast(pl.Utf8).str.zfill(13)),
        row_index="i",
        source="source",
        source_file=pl.format("{}.jsonl", "source"),
        file_row=pl.col("i") // 3,
        messages=pl.concat_str(
            pl.lit('[{"role": "user", "content": "'),
            prompt,
            pl.lit('"}, {"role": "assistant", "content": "'),
            answer,
            pl.lit('"}]'),
        ),
        prompt=prompt,
        response=answer,
        record=pl.concat_str(
            pl.lit('{"instruction": "Question number '), pl.col("i"), pl.lit('", "output": "'), answer, pl.lit('"}')
        ),
        n_prompt_tokens=(10 + pl.col("i") % 50).cast(pl.Int32),
        n_response_tokens=(5 + pl.col("i") % 200).cast(pl.Int32),
        status=pl.when(pl.col("i") % 997 == 0).then(pl.lit("empty_response")).otherwise(pl.lit("ok")),
        truncated=pl.lit(False),
    )


def write_synthetic_profile(out: str | Path, n: int, *, n_checkpoints: int = 5, seed: int = 42) -> Path:
    """Write a synthetic profile of ``n`` examples to ``out`` (replacing an sftmix table there) and return it."""
    out = Path(out)
    check_output_table(out)  # never replace someone else's file
    out.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    examples = synthetic_examples(n)
    ok = examples.filter(pl.col("status") == "ok")
    ids = ok["example_id"]
    n_ok = ok.height
    tokens = ok["n_response_tokens"].to_numpy()
    difficulty = 0.5 + 2.5 * rng.random(n_ok)  # each example's own level, falling over the epoch
    angle = 2 * np.pi * (ok["row_index"].to_numpy() % TOPICS) / TOPICS
    xy = np.column_stack([10 * np.cos(angle), 10 * np.sin(angle)]) + 2 * rng.random((n_ok, 2))
    with TableWriter(out) as t:
        t.init_examples(examples, f"synthetic-{n}", {"synthetic": True})
        ckpt_ids = t.register_checkpoints(
            [
                CheckpointInfo(f"synthetic/checkpoint-{k + 1}", k + 1, (k + 1) / n_checkpoints)
                for k in range(n_checkpoints)
            ]
        )
        for k, cid in enumerate(ckpt_ids):
            nll = np.maximum(0.05, difficulty * (1 - 0.5 * (k + 1) / n_checkpoints) + 0.1 * rng.random(n_ok))
            scores = pl.DataFrame({"example_id": ids, "nll_sum": nll * tokens, "n_tokens": tokens})
            if k == len(ckpt_ids) - 1:  # embeddings come with the last checkpoint's scores, as in a real run
                scores = scores.with_columns(embedding=pl.Series(xy.astype(np.float32)).cast(pl.List(pl.Float32)))
            t.write_scores(cid, scores)
        t.write_confidence(compute_confidence(t.scores_frame(), ckpt_ids, 10))
        t.write_projection(ids.to_list(), xy)  # the 2-D vectors are their own map
        t.set_meta(
            {
                "reference_model": "synthetic",
                "projection": {"method": "umap", "seed": 0, "fit_on": n},
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
