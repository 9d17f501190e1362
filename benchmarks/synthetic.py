"""A synthetic profile of any size: for load tests and trying the dashboard at scale.

    python benchmarks/synthetic.py big.duckdb --n 200000 [--token-scores last|all] [--ifd] [--long-response 2000]

writes, through the table's writer, a table with the real schema: examples from three sources (every 997th one
unusable), C checkpoints of scores whose perplexity falls over the epoch, the confidence split, and a 2-D map with
clusters; optionally each response token's NLL (at the last checkpoint or at all) with the tokens' text (the
response is then made of those tokens: words of a small vocabulary, each with its own difficulty), the IFD of each
example, and one response of a given number of tokens. The numbers are random (seeded); only their shapes are
realistic. An existing output is replaced only when it is an sftmix table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import polars as pl

from profiler.confidence import compute_confidence
from profiler.table import CheckpointInfo, TableWriter, check_output_table

SOURCES = ("alpaca", "dolly", "chat")
TOPICS = 17  # clusters on the map
# The tokens of synthetic responses (with token scores), and how hard each is: a word's NLL is its difficulty
# times the example's, falling over the epoch. Frequent function words are easy, rare content words hard.
VOCAB = (
    (" the", 0.3), (" a", 0.4), (" of", 0.3), (" to", 0.4), (" and", 0.3), (" is", 0.5), (",", 0.4), (".", 0.3),
    ("\n", 0.6), (" permit", 1.6), (" building", 1.4), (" weeks", 1.8), (" model", 1.2), (" data", 1.1),
    (" loss", 1.5), (" token", 1.3), (" gradient", 2.2), (" entropy", 2.5), (" Zaragoza", 3.0), (" 42", 2.8),
)  # fmt: skip
VOCAB_WEIGHTS = np.array([12, 10, 9, 8, 8, 7, 7, 7, 4, 2, 2, 2, 3, 3, 2, 2, 1, 1, 1, 1], dtype=float)


def _json_text(col: pl.Expr) -> pl.Expr:
    """A string column's text as the inside of a JSON string."""
    return (
        col.str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all('"', '\\"', literal=True)
        .str.replace_all("\n", "\\n", literal=True)
    )


def synthetic_examples(n: int, responses: pl.DataFrame | None = None) -> pl.DataFrame:
    """The ``examples`` rows: three sources in turn, chat messages, the original record; every 997th unusable.

    ``responses`` (``i``, ``response``, ``n_response_tokens``), where given, replace the answers of those rows.
    """
    i = pl.int_range(0, n, dtype=pl.Int64, eager=True).alias("i")
    frame = pl.DataFrame(i).with_columns(
        source=pl.lit(pl.Series(SOURCES)).get(pl.col("i") % 3),
        topic=pl.col("i") % TOPICS,
        answer=pl.format("Answer {}", "i"),
        n_tokens=(5 + pl.col("i") % 200).cast(pl.Int32),
    )
    if responses is not None:
        frame = frame.join(responses, on="i", how="left").with_columns(
            answer=pl.coalesce("response", "answer"), n_tokens=pl.coalesce("n_response_tokens", "n_tokens")
        )
    prompt = pl.format("Question number {} about topic {}", "i", "topic")
    answer = _json_text(pl.col("answer"))
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
        response="answer",
        record=pl.concat_str(
            pl.lit('{"instruction": "Question number '), pl.col("i"), pl.lit('", "output": "'), answer, pl.lit('"}')
        ),
        n_prompt_tokens=(10 + pl.col("i") % 50).cast(pl.Int32),
        n_response_tokens="n_tokens",
        status=pl.when(pl.col("i") % 997 == 0).then(pl.lit("empty_response")).otherwise(pl.lit("ok")),
        truncated=pl.lit(False),
    )


def synthetic_tokens(n: int, rng: np.random.Generator, long_response: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    """Token-level responses for the usable rows of :func:`synthetic_examples` (``n`` rows): the frame ``i``,
    ``response``, ``n_response_tokens``, ``tokens`` (the texts) and ``word`` (their :data:`VOCAB` indices), and
    each word's difficulty. Row 1 (the first usable one) has ``long_response`` tokens where that is given."""
    i = np.arange(n)
    i = i[i % 997 != 0]
    counts = (5 + i % 200).astype(np.int64)
    if long_response and i.size:
        counts[0] = long_response
    words = rng.choice(len(VOCAB), size=int(counts.sum()), p=VOCAB_WEIGHTS / VOCAB_WEIGHTS.sum())
    texts = pl.Series([t for t, _ in VOCAB])
    flat = pl.DataFrame({"i": np.repeat(i, counts), "word": words, "tok": texts.gather(words)})
    frame = (
        flat.group_by("i", maintain_order=True)
        .agg(tokens="tok", word="word")
        .with_columns(response=pl.col("tokens").list.join(""), n_response_tokens=pl.col("tokens").list.len())
    )
    return frame.with_columns(pl.col("n_response_tokens").cast(pl.Int32)), np.array([d for _, d in VOCAB])


def write_synthetic_profile(
    out: str | Path,
    n: int,
    *,
    n_checkpoints: int = 5,
    seed: int = 42,
    token_scores: str = "none",
    ifd: bool = False,
    long_response: int = 0,
) -> Path:
    """Write a synthetic profile of ``n`` examples to ``out`` (replacing an sftmix table there) and return it.

    Args:
        token_scores: ``none``, ``last`` or ``all``: store each response token's NLL at no checkpoint, the last,
            or every one (the responses are then made of :data:`VOCAB` tokens, whose NLLs sum to ``nll_sum``).
        ifd: store an IFD for each scored example (lognormal around 0.85).
        long_response: with token scores, the first usable example's response has this many tokens.
    """
    if token_scores not in ("none", "last", "all"):
        raise ValueError(f"token_scores must be none, last or all, not {token_scores!r}")
    out = Path(out)
    check_output_table(out)  # never replace someone else's file
    out.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    toks = word_nll = None
    if token_scores != "none":
        toks, word_nll = synthetic_tokens(n, rng, long_response)
    examples = synthetic_examples(n, None if toks is None else toks.select("i", "response", "n_response_tokens"))
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
        if toks is not None:
            words = toks["word"].explode().to_numpy()
            starts = np.concatenate([[0], np.cumsum(tokens)[:-1]])
            row_of_token = np.repeat(np.arange(n_ok), tokens)
        for k, cid in enumerate(ckpt_ids):
            fall = 1 - 0.5 * (k + 1) / n_checkpoints
            last = k == len(ckpt_ids) - 1
            if toks is None:
                nll = np.maximum(0.05, difficulty * fall + 0.1 * rng.random(n_ok))
                scores = pl.DataFrame({"example_id": ids, "nll_sum": nll * tokens, "n_tokens": tokens})
            else:  # per token: the word's difficulty times the example's, with noise; they sum to nll_sum
                per_token = np.repeat(difficulty, tokens) * word_nll[words] * fall
                per_token = (per_token * rng.lognormal(0.0, 0.3, per_token.size)).astype(np.float32)
                scores = pl.DataFrame(
                    {
                        "example_id": ids,
                        "nll_sum": np.add.reduceat(per_token.astype(np.float64), starts),
                        "n_tokens": tokens,
                    }
                )
                if token_scores == "all" or last:
                    lists = pl.DataFrame({"row": row_of_token, "nll": per_token}).group_by("row", maintain_order=True)
                    scores = scores.with_columns(token_nll=lists.agg("nll")["nll"])
            if last:  # embeddings come with the last checkpoint's scores, as in a real run
                scores = scores.with_columns(embedding=pl.Series(xy.astype(np.float32)).cast(pl.List(pl.Float32)))
            texts = None
            if toks is not None and k == 0:
                texts = dict(zip(ids.to_list(), toks["tokens"].to_list()))
            t.write_scores(cid, scores, tokens=texts)
        t.write_confidence(compute_confidence(t.scores_frame(), ckpt_ids, 10))
        t.write_projection(ids.to_list(), xy)  # the 2-D vectors are their own map
        if ifd:
            last_nll = t.mean_nlls(ckpt_ids[-1])
            values = np.exp(rng.normal(-0.15, 0.25, n_ok))
            rows = [
                (e, (last_nll[e] - math.log(v)) * int(n_tok), int(n_tok), float(v))
                for e, n_tok, v in zip(ids.to_list(), tokens.tolist(), values.tolist())
            ]
            t.write_ifd(ckpt_ids[-1], f"synthetic/checkpoint-{n_checkpoints}", rows)
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
    p.add_argument("--token-scores", choices=("none", "last", "all"), default="none")
    p.add_argument("--ifd", action="store_true", help="store an IFD for each example")
    p.add_argument("--long-response", type=int, default=0, help="tokens of one response (with --token-scores)")
    args = p.parse_args()
    out = write_synthetic_profile(
        args.out,
        args.n,
        n_checkpoints=args.checkpoints,
        token_scores=args.token_scores,
        ifd=args.ifd,
        long_response=args.long_response,
    )
    print(out)


if __name__ == "__main__":
    main()
