"""Synthetic instruction data for benchmarks that run where the packaged datasets are not installed."""

from __future__ import annotations

import random

from profiler.data.formats import Example

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "it",
    "be",
    "are",
    "was",
    "can",
    "will",
    "use",
    "how",
    "what",
    "why",
    "when",
    "explain",
    "describe",
    "write",
    "list",
    "give",
    "make",
    "find",
    "answer",
    "question",
    "data",
    "model",
    "building",
    "permit",
    "weeks",
    "machine",
    "science",
    "history",
    "water",
    "energy",
    "city",
    "school",
    "health",
    "music",
    "language",
    "number",
    "system",
    "process",
    "example",
    "result",
]


def synthetic_examples(n: int, seed: int) -> list[Example]:
    """Alpaca-like single-turn examples: 5-40 word instructions, 10-200 word responses (seeded)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(5, 40)))
        answer = " ".join(rng.choices(WORDS, k=rng.randint(10, 200)))
        out.append(Example([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]))
    return out
