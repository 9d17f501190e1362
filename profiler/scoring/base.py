"""The interface every scoring backend implements: the same token ids in, the same sums out.

    backend = make_backend(choice, settings, checkpoints, items)   # profiler.scoring.backends
    with backend.open_checkpoint(info, embed=False) as scorer:
        for batch in scorer.score(items, desc="checkpoint 1/3", tokens=True):
            ...  # a list of ExampleScore (with per-token NLLs)
    backend.close()

Each backend lives in its own module (``torch_backend``, ``vllm_backend``, ``ray_backend``); this one holds what
they share: the items and scores, the settings, an opened checkpoint and the protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
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


@dataclass(frozen=True)
class BackendSettings:
    """What every backend needs to load and score a checkpoint: the run's options of the same names."""

    model: str  # the reference model; the base of adapter checkpoints
    device: str = "auto"
    dtype: str = "auto"
    max_tokens: int | None = None
    max_batch_size: int | None = None
    pad_token_id: int = 0
    progress: bool = True
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    ray: str | None = None

    @classmethod
    def of(cls, cfg: Any, **given: Any) -> BackendSettings:
        """The settings a run's config (``ScoreConfig``) holds under the same names, and ``given`` (what the config
        does not hold: the tokenizer's pad id)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if f.name not in given}, **given)

    @cached_property
    def torch_device(self):
        """``device`` resolved (``auto``: CUDA when present), once for every backend."""
        from profiler.hf import resolve_device

        return resolve_device(self.device)

    @cached_property
    def torch_dtype(self):
        """``dtype`` resolved for :attr:`torch_device` (``auto``: bfloat16 on a GPU that has it, else float32)."""
        from profiler.hf import resolve_dtype

        return resolve_dtype(self.dtype, self.torch_device)


class CheckpointScorer:
    """One opened checkpoint: ``score(items, desc)`` yields lists of :class:`ExampleScore`.

    Args:
        fn: the backend's scoring call, taking the items and ``desc``, ``progress``, ``embed`` and ``tokens``
            keywords.
        progress, embed: the checkpoint's defaults.
    """

    def __init__(self, fn: Callable[..., Iterator[list[ExampleScore]]], *, progress: bool = True, embed: bool = False):
        self._fn: Callable | None = fn
        self.progress = progress
        self.embed = embed

    def score(
        self, items: Sequence[ScoreItem], desc: str = "scoring", *, embed: bool | None = None, tokens: bool = False
    ) -> Iterator[list[ExampleScore]]:
        """Scores of ``items``; ``embed`` (default: the checkpoint's) adds embeddings, ``tokens`` per-token NLLs.

        A checkpoint opened to embed can score other items without embeddings (``embed=False``) on the same
        loaded model: the IFD pass does.
        """
        if self._fn is None:
            raise RuntimeError("this checkpoint was closed")
        embed = self.embed if embed is None else embed
        return self._fn(items, progress=self.progress, desc=desc, embed=embed, tokens=tokens)

    def release(self) -> None:
        self._fn = None  # drops the model the closure holds


class Backend(Protocol):
    name: str

    def open_checkpoint(self, info: Any, *, embed: bool) -> Any:
        """A context manager yielding a :class:`CheckpointScorer` for ``info`` (a ``CheckpointInfo``)."""
        ...

    def close(self) -> None: ...
