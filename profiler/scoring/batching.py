"""Length-sorted batching by a token budget, so batches hold little padding."""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_batch_size: int | None = None) -> list[list[int]]:
    """Group indices into batches whose padded size (rows x longest row) stays within ``max_tokens``.

    Longest first, so an out-of-memory error shows up in the first batch, not after an hour.
    An example longer than the budget gets a batch of its own.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        cap = max(longest, lengths[i])
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (cap * (len(current) + 1) > max_tokens or full):
            batches.append(current)
            current, cap = [], lengths[i]
        current.append(i)
        longest = cap
    if current:
        batches.append(current)
    return batches
