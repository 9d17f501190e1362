"""Balanced, randomly paired batches: each batch holds B/2 confident then B/2 unconfident examples.

Pair i of a batch is (batch[i], batch[B/2 + i]). Pairs are re-drawn every epoch from ``(seed, epoch)``.

Unequal halves lose nothing: every example of both halves appears in every epoch. The smaller half is
topped up with examples drawn again from itself at random, so the number of pairs is the size of the
larger half. The last batches are completed (to a multiple of ``world_size`` whole batches, so every
data-parallel rank gets the same number of whole batches) with pairs drawn again at random. The number of
such repeats per epoch is :attr:`PairedSampler.n_repeated`.

Length grouping (``lengths`` given): the epoch's pairs are the same, only the batches they are dealt into change.
A batch is padded to its longest row, so a pair costs ``max(len_c, len_u)`` per row. As transformers'
``group_by_length`` does with examples, the pairs are shuffled (seeded by ``(seed, epoch)`` apart from the
pairing), cut into windows of ``window`` optimizer steps, each window sorted by pair length (longest first) and cut
into steps, each step into its batches; the step holding the longest pair goes first, so running out of memory
happens at once. A step is the ``world_size * accumulation`` batches one optimizer step consumes (data-parallel
ranks take batches in turn, and each rank ``accumulation`` of its own), so the ranks of a step get batches of
similar length, and the order depends on the pairs per optimizer step only, as the drawn order does: a step's
pairs are the same with ``accumulation`` micro-batches of B or one batch of ``accumulation * B``, on one process or
on several (when both settings top the epoch up to the same number of pairs).

With random pairs a batch of pairs cannot cost less than ``2 * sum(max(len_c, len_u))``: the shorter row of each
pair is padded to the longer one. :func:`padding_ratio` measures an order's cost against the real tokens.

The sampler yields one flat stream of indices, batch after batch; a ``DataLoader`` with ``batch_size=B``
cuts it into batches, and accelerate's data-parallel sharding deals whole batches to ranks (batch j to rank
j mod world_size).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

# Optimizer steps per length-grouping window at most (transformers' mega-batch: 50 batches of batch x accumulation).
WINDOW_STEPS = 50
_GROUPING_STREAM = 1  # the grouping's random stream: (seed, epoch, 1), apart from the pairing's (seed, epoch)


def default_window(n_steps: int) -> int:
    """Optimizer steps per window: 50, or a quarter of the epoch's steps when that is fewer (as transformers
    chooses its mega-batches), at least one."""
    return max(1, min(n_steps // 4, WINDOW_STEPS))


def padding_ratio(batches: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
    """``(real, padded)`` tokens of batches of pairs (``[n_batches, k, 2]`` dataset indices): each batch of ``2k``
    rows padded to its longest row."""
    rows = np.asarray(lengths)[batches.reshape(len(batches), -1)]
    return int(rows.sum()), int(rows.max(axis=1).sum() * rows.shape[1])


class PairedSampler(Sampler[int]):
    """Yields dataset indices in batches of ``pairs_per_batch`` confident + ``pairs_per_batch`` unconfident.

    Args:
        confident: dataset indices of confident examples.
        unconfident: dataset indices of unconfident examples.
        pairs_per_batch: pairs per batch (the batch size is twice that).
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        world_size: data-parallel ranks; the stream holds a multiple of this many batches.
        accumulation: batches per rank per optimizer step (gradient accumulation); only length grouping uses it.
        lengths: tokens of every example, indexed by dataset index: batches gather pairs of similar length. None:
            the pairs in their drawn order.
        window: optimizer steps per length-grouping window (default :func:`default_window`).
    """

    def __init__(
        self,
        confident: Sequence[int],
        unconfident: Sequence[int],
        pairs_per_batch: int,
        *,
        seed: int = 0,
        world_size: int = 1,
        accumulation: int = 1,
        lengths: Sequence[int] | None = None,
        window: int | None = None,
    ):
        if pairs_per_batch < 1:
            raise ValueError(f"pairs_per_batch must be >= 1, got {pairs_per_batch}")
        if not len(confident) or not len(unconfident):
            raise ValueError(
                f"both halves need examples; got {len(confident)} confident, {len(unconfident)} unconfident"
            )
        self.confident = np.asarray(confident, dtype=np.int64)
        self.unconfident = np.asarray(unconfident, dtype=np.int64)
        self.k = pairs_per_batch
        self.seed = seed
        self.world_size = world_size
        self.epoch = 0
        n_pairs = max(len(self.confident), len(self.unconfident))
        per_step = self.k * world_size
        self.n_batches = -(-n_pairs // per_step) * world_size
        self.n_repeated = 2 * self.n_batches * self.k - len(self.confident) - len(self.unconfident)
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        if self.lengths is not None:
            top = int(max(self.confident.max(), self.unconfident.max()))
            if len(self.lengths) <= top:
                raise ValueError(f"lengths has {len(self.lengths)} entries; the indices go up to {top}")
        if accumulation < 1:
            raise ValueError(f"accumulation must be >= 1, got {accumulation}")
        self.pairs_per_step = self.k * world_size * accumulation
        self.n_steps = -(-self.n_batches * self.k // self.pairs_per_step)
        self.window = default_window(self.n_steps) if window is None else window
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _half(self, idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """All of ``idx`` in random order, topped up to ``n`` by drawing again from it."""
        order = rng.permutation(idx)
        if n > len(order):
            extra = rng.choice(idx, size=n - len(order), replace=n - len(order) > len(idx))
            order = rng.permutation(np.concatenate([order, extra]))
        return order

    def pairs(self, epoch: int | None = None) -> np.ndarray:
        """The epoch's pairs as an ``[n_pairs, 2]`` array of (confident, unconfident) indices."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        n = max(len(self.confident), len(self.unconfident))
        c, u = self._half(self.confident, n, rng), self._half(self.unconfident, n, rng)
        pairs = np.stack([c, u], axis=1)
        missing = self.n_batches * self.k - n
        if missing:
            pairs = np.concatenate([pairs, pairs[rng.choice(n, size=missing, replace=missing > n)]])
        return pairs

    def batches(self, epoch: int | None = None) -> np.ndarray:
        """The epoch's batches as an ``[n_batches, pairs_per_batch, 2]`` array: the rows of :meth:`pairs`, in their
        drawn order, or grouped by length when the sampler has ``lengths``."""
        epoch = self.epoch if epoch is None else epoch
        pairs = self.pairs(epoch)
        if self.lengths is None:
            return pairs.reshape(self.n_batches, self.k, 2)
        rng = np.random.default_rng([self.seed, epoch, _GROUPING_STREAM])
        cost = self.lengths[pairs].max(axis=1)  # per pair: what it pads its batch to
        order = rng.permutation(len(pairs))
        # Sort within windows of whole steps, longest first; ties keep the shuffled order (lexsort is stable).
        step = self.pairs_per_step
        window_of = np.arange(len(order)) // (self.window * step)
        order = order[np.lexsort((-cost[order], window_of))]
        # The step holding the longest pair (the first of its window) goes first. The last step may be short (the
        # epoch's batches need not fill whole steps): then only as many pairs as it has trade places.
        first = int(np.argmax(cost[order]) // step * step)
        if first:
            size = min(step, len(order) - first)
            order[:size], order[first : first + size] = order[first : first + size].copy(), order[:size].copy()
        return pairs[order].reshape(self.n_batches, self.k, 2)

    def __iter__(self) -> Iterator[int]:
        for chunk in self.batches():
            yield from chunk[:, 0].tolist()
            yield from chunk[:, 1].tolist()

    def __len__(self) -> int:
        return self.n_batches * 2 * self.k
