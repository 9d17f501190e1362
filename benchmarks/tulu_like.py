"""Synthetic Tulu-3-like chat data: JSONL in the ``messages`` format, for benchmarking the data path at scale.

Tulu 3's SFT mixture (939,343 examples, the largest run of the SFTMix paper) is mostly single-turn, with some
multi-turn dialogs and some system prompts, and its lengths are heavy-tailed. These examples copy that shape:
30% have 2-4 user/assistant exchanges, 10% open with a system message, and each message's word count is
log-normal (capped so that a rendered example stays within the profiler's default ``max_length`` of 2048 tokens).
Words are English words drawn with Zipf weights, with commas, full stops and paragraph breaks between them, so a
real tokenizer sees ordinary text. The parameters are tuned to about 564 tokens per example (Tulu 3's mean) with
the SmolLM2 tokenizer and its chat template; ``--measure K`` renders K examples and prints what they come to.

Everything is drawn with numpy from one seed (the same ``n`` and seed write the same file) and written with plain
file writes: a million examples take well under a minute.

    python benchmarks/tulu_like.py data.jsonl --n 1000000
    python benchmarks/tulu_like.py data.jsonl --n 5000 --measure 5000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from workload import WORDS  # benchmarks/workload.py

# Longer words, most of them several tokens, beside workload.WORDS' short ones (one token each).
LONG_WORDS = [
    "approximately",
    "implementation",
    "characteristics",
    "photosynthesis",
    "responsibility",
    "infrastructure",
    "recommendation",
    "understanding",
    "significantly",
    "environmental",
    "mathematical",
    "probability",
    "temperature",
    "information",
    "development",
    "algorithm",
    "function",
    "variable",
    "equation",
    "government",
    "community",
    "everything",
    "different",
    "important",
    "following",
    "therefore",
    "however",
    "because",
    "between",
    "through",
    "example",
    "students",
    "research",
    "analysis",
    "strategy",
    "customer",
    "response",
    "solution",
    "problem",
    "people",
]
VOCAB = WORDS + LONG_WORDS
# What follows a word inside a message (JSON-escaped already: the text is written into the file as it is).
SEPARATORS = [" ", ", ", ". ", "\\n\\n"]
SEPARATOR_P = [0.86, 0.06, 0.07, 0.01]
ROLES = ("system", "user", "assistant")
BINS = 2**20


@dataclass(frozen=True)
class Shape:
    """How the examples are made: turn structure and log-normal word counts (median, sigma) per role."""

    multi_turn: float = 0.30  # share of examples with 2-4 exchanges
    system: float = 0.10  # share of examples opening with a system message
    system_words: tuple[float, float] = (18.0, 0.6)
    user_words: tuple[float, float] = (33.0, 1.1)
    assistant_words: tuple[float, float] = (166.0, 0.85)
    max_words: int = 1500  # per example: rendered, it stays under 2048 tokens


def message_plan(n: int, shape: Shape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per message: its example's index, its role (an index into :data:`ROLES`) and its word count."""
    exchanges = np.where(rng.random(n) < shape.multi_turn, rng.integers(2, 5, n), 1)
    has_system = rng.random(n) < shape.system
    per_example = 2 * exchanges + has_system
    example = np.repeat(np.arange(n), per_example)
    position = np.arange(example.size) - np.repeat(np.cumsum(per_example) - per_example, per_example)
    position = position - has_system[example]  # -1: the system message
    role = np.where(position < 0, 0, 1 + position % 2)
    medians = np.array([shape.system_words[0], shape.user_words[0], shape.assistant_words[0]])
    sigmas = np.array([shape.system_words[1], shape.user_words[1], shape.assistant_words[1]])
    words = np.maximum(1, rng.lognormal(np.log(medians[role]), sigmas[role])).astype(np.int64)
    total = np.bincount(example, weights=words, minlength=n)
    scale = np.minimum(1.0, shape.max_words / total)[example]
    return example, role, np.maximum(1, (words * scale).astype(np.int64))


def message_texts(words: np.ndarray, rng: np.random.Generator) -> list[str]:
    """The contents of messages of the given word counts: Zipf-weighted words, separators between them."""
    pieces = [w + s for w in VOCAB for s in SEPARATORS] + [w + "." for w in VOCAB]  # word and what follows it
    zipf = 1.0 / np.arange(1, len(VOCAB) + 1)
    cdf = np.cumsum(np.outer(zipf / zipf.sum(), SEPARATOR_P).ravel())
    # Inverse-CDF sampling through a lookup table of 2^20 equal bins (searchsorted per draw is 10x slower).
    table = np.minimum(np.searchsorted(cdf / cdf[-1], (np.arange(BINS) + 0.5) / BINS), len(cdf) - 1)
    piece = table[rng.integers(0, BINS, int(words.sum()), dtype=np.uint32)]
    last = np.cumsum(words) - 1
    piece[last] = len(cdf) + piece[last] // len(SEPARATORS)  # a message ends on its word and a full stop
    flat = np.array(pieces, dtype=object)[piece].tolist()
    bounds = np.concatenate([[0], np.cumsum(words)]).tolist()
    return ["".join(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def jsonl_lines(example: np.ndarray, role: np.ndarray, texts: list[str]) -> str:
    """The JSONL text of whole examples, given their messages in order."""
    out, current, messages = [], int(example[0]) if example.size else 0, []
    for e, r, text in zip(example.tolist(), role.tolist(), texts):
        if e != current:
            out.append('{"messages": [' + ", ".join(messages) + "]}\n")
            current, messages = e, []
        messages.append(f'{{"role": "{ROLES[r]}", "content": "{text}"}}')
    if messages:
        out.append('{"messages": [' + ", ".join(messages) + "]}\n")
    return "".join(out)


def write_tulu_like(path: str | Path, n: int, *, seed: int = 0, shape: Shape = Shape(), chunk: int = 20_000) -> Path:
    """Write ``n`` examples to ``path`` (JSONL), ``chunk`` examples at a time, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as f:
        for start in range(0, n, chunk):
            example, role, words = message_plan(min(chunk, n - start), shape, rng)
            f.write(jsonl_lines(example, role, message_texts(words, rng)))
    return path


def measure(path: str | Path, k: int) -> dict[str, float]:
    """Render the first ``k`` examples with the packaged SmolLM2 tokenizer and chat template (as the profiler's
    data stage does): tokens per example (mean, median, p99, max) and the shares of multi-turn and system."""
    import json

    from profiler.assets import smollm2_checkpoint
    from profiler.data.formats import Example
    from profiler.data.render import Renderer
    from profiler.hf import load_tokenizer

    renderer = Renderer(load_tokenizer(str(smollm2_checkpoint())), max_length=10**6)  # measure, never reject
    lengths, multi, system = [], 0, 0
    with Path(path).open(encoding="utf-8") as f:
        for _, line in zip(range(k), f):
            messages = json.loads(line)["messages"]
            multi += sum(m["role"] == "assistant" for m in messages) > 1
            system += messages[0]["role"] == "system"
            lengths.append(len(renderer.render(Example(messages)).input_ids))
    a = np.array(lengths)
    return {
        "examples": len(a),
        "mean": a.mean(),
        "median": np.median(a),
        "p99": np.percentile(a, 99),
        "max": a.max(),
        "over_2048": int((a > 2048).sum()),
        "multi_turn": multi / len(a),
        "system": system / len(a),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the JSONL file to write")
    p.add_argument("--n", type=int, default=939_343, help="examples (default: Tulu 3's count)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure", type=int, default=0, metavar="K", help="render K examples and print their tokens")
    args = p.parse_args()
    t = time.perf_counter()
    out = write_tulu_like(args.out, args.n, seed=args.seed)
    seconds, size = time.perf_counter() - t, out.stat().st_size / 2**20
    print(f"wrote {args.n:,} examples to {out} ({size:.1f} MiB) in {seconds:.1f} s")
    if args.measure:
        m = measure(out, args.measure)
        print(
            f"SmolLM2 tokens per example over the first {m['examples']:,}: mean {m['mean']:.1f}, median "
            f"{m['median']:.0f}, p99 {m['p99']:.0f}, max {m['max']:.0f} ({m['over_2048']} over 2048); "
            f"multi-turn {m['multi_turn']:.1%}, "
            f"with a system message {m['system']:.1%}"
        )


if __name__ == "__main__":
    main()
