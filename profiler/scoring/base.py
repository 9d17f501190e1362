"""The interface every scoring backend implements: the same token ids in, the same sums out."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ScoreItem:
    """One example to score: token ids and which of them are response tokens."""

    example_id: str
    input_ids: Sequence[int]
    response_mask: Sequence[bool]


@dataclass(frozen=True)
class ExampleScore:
    """Response-token negative log-likelihood of one example at one checkpoint.

    ``embedding`` (float32 numpy vector, when asked for) is the mean of the final hidden states over all the
    example's tokens, computed in the same forward pass as the score. ``token_nll`` (float32 numpy vector, when
    asked for) holds the NLL of each scored token in position order: ``n_tokens`` values summing to ``nll_sum``.
    """

    example_id: str
    nll_sum: float
    n_tokens: int
    embedding: Any = field(default=None, compare=False, repr=False)
    token_nll: Any = field(default=None, compare=False, repr=False)

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.n_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)


class Scorer(Protocol):
    """A backend scoring examples with one loaded model (checkpoint)."""

    def score(
        self, items: Sequence[ScoreItem], *, progress: bool = True, embed: bool = False, tokens: bool = False
    ) -> Iterator[list[ExampleScore]]:
        """Yield scores batch by batch (so callers can write them as they come), covering every item once.

        With ``embed``, each score carries its example's mean-pooled final hidden state; with ``tokens``, the NLL
        of each scored token (``token_nll``).
        """
        ...
