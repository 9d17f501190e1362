"""Balanced, randomly paired batches: each batch holds B/2 confident then B/2 unconfident examples.

Pair i of a batch is (batch[i], batch[B/2 + i]). Pairs are re-drawn every epoch from ``(seed, epoch)``.

Unequal halves lose nothing: every example of both halves appears in every epoch. The smaller half is
topped up with examples drawn again from itself at random, so the number of pairs is the size of the
larger half. The last batches are completed (to a multiple of ``world_size`` whole batches, so every
data-parallel rank gets the same number of whole batches) with pairs drawn again at random. The number of
such repeats per epoch is :attr:`PairedSampler.n_repeated`.

The sampler yields one flat stream of indices, batch after batch; a ``DataLoader`` with ``batch_size=B``
cuts it into batches, and accelerate's data-parallel sharding deals whole batches to ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PairedSampler(Sampler[int]):
    """Yields dataset indices in batches of ``pairs_per_batch`` confident + ``pairs_per_batch`` unconfident.

    Args:
        confident: dataset indices of confident examples.
        unconfident: dataset indices of unconfident examples.
        pairs_per_batch: pairs per batch (the batch size is twice that).
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        world_size: data-parallel ranks; the stream holds a multiple of this many batches.
    """

    def __init__(
        self,
        confident: Sequence[int],
        unconfident: Sequence[int],
        pairs_per_batch: int,
        *,
        seed: int = 0,
        world_size: int = 1,
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

    def __iter__(self) -> Iterator[int]:
        pairs = self.pairs()
        for b in range(self.n_batches):
            chunk = pairs[b * self.k : (b + 1) * self.k]
            yield from chunk[:, 0].tolist()
            yield from chunk[:, 1].tolist()

    def __len__(self) -> int:
        return self.n_batches * 2 * self.k
