"""IFD, the instruction-following difficulty of Cherry-LLM and Superfiltering: ``IFD = PPL(y | x) / PPL(y)``.

``PPL(y | x)`` is the example's response perplexity as scored (its response tokens, with the prompt as context).
``PPL(y)`` scores the same response tokens once more without the prompt: one forward pass over the tokenizer's
start tokens (its BOS, where it adds one by default, as Llama and Gemma do) followed by the response tokens.
Without a BOS (GPT-2, Qwen, SmolLM2) the first response token has nothing to predict it, so ``PPL(y)`` covers one
token fewer, as in Cherry-LLM's code; a one-token response then has no IFD. Each perplexity is the exponential of
the mean NLL over its tokens, so ``IFD = exp(mean_nll(y | x) - mean_nll(y))``: above 1, the prompt makes the
response harder to predict than no prompt at all.

Multi-turn examples: ``y`` is every scored assistant turn (each with its end-of-turn marker, as scored),
concatenated in order without the system and user turns. ``PPL(y)`` is then the perplexity of the whole response
sequence, each turn conditioned on the earlier responses only, over the same tokens as ``PPL(y | x)``, which
conditions each turn on the whole conversation before it. (Scoring each turn alone would instead drop the
earlier responses from the context too.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from profiler.data.tokens import scored_token_ids
from profiler.scoring.base import ExampleScore, ScoreItem


def alone_item(item: ScoreItem, start: Sequence[int]) -> ScoreItem | None:
    """The item's scored response tokens after the ``start`` tokens, all of them scored (but the first, without a
    start token); None when that leaves nothing to score."""
    response = scored_token_ids(item.input_ids, item.response_mask)
    ids = [*start, *response]
    mask = [False] * len(start) + [True] * len(response)
    if not any(mask[1:]):
        return None
    return ScoreItem(item.example_id, ids, mask)


def alone_items(items: Sequence[ScoreItem], start: Sequence[int]) -> Sequence[ScoreItem]:
    """:func:`alone_item` of each item that has a token to score alone (a view, made on access, of a view of the
    rendered cache)."""
    if hasattr(items, "alone"):
        return items.alone(start)
    return [a for a in (alone_item(it, start) for it in items) if a is not None]


def ifd_value(mean_nll_given_prompt: float, mean_nll_alone: float) -> float:
    """``PPL(y | x) / PPL(y)`` from the two mean NLLs."""
    return math.exp(mean_nll_given_prompt - mean_nll_alone)


def ifd_rows(alone: Sequence[ExampleScore], conditional: Mapping[str, float]) -> list[tuple[str, float, int, float]]:
    """Rows ``(example_id, nll_sum_alone, n_tokens, ifd)`` of the ``ifd`` table, from the scores of the responses
    alone and each example's mean NLL given its prompt (``conditional``, by example id)."""
    return [(s.example_id, s.nll_sum, s.n_tokens, ifd_value(conditional[s.example_id], s.mean_nll)) for s in alone]
