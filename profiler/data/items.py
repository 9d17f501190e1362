"""Score items read on access from Arrow list columns, so no process holds a dataset's token ids as Python lists.

A :class:`RenderedItems` is a ``Sequence[ScoreItem]`` over some rows of the rendered cache: ``items[i]`` is a
:class:`~profiler.scoring.base.ScoreItem` whose ``input_ids`` (int32) and ``response_mask`` (bool) are numpy views
of the memory-mapped columns. Views compose without copying token data: ``subset`` keeps some positions,
``alone`` gives IFD's responses-alone items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa


class _ListColumn:
    """Row -> numpy view of one list column (int32 or uint8 values), across the column's chunks."""

    def __init__(self, column: pa.ChunkedArray):
        self.chunks = column.chunks
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        self._values: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _chunk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._values:
            c = self.chunks[k]
            self._values[k] = (c.offsets.to_numpy(), c.values.to_numpy(zero_copy_only=False))
        return self._values[k]

    def __getitem__(self, row: int) -> np.ndarray:
        k = int(np.searchsorted(self.starts, row, "right")) - 1
        offsets, values = self._chunk(k)
        local = row - self.starts[k]
        return values[offsets[local] : offsets[local + 1]]


class RenderedItems(Sequence):
    """Score items of ``rows`` of a rendered table (see the module docstring).

    Args:
        ids: example id of every row of the table (indexed by row number).
        input_ids, response_mask: the table's list columns.
        n_tokens, scored_len, n_scored: per table row, the token count, the position after the last response
            token, and the scored (response) token count.
        rows: the table rows this view holds, in order.
    """

    def __init__(
        self,
        ids: Sequence[str],
        input_ids: _ListColumn,
        response_mask: _ListColumn,
        n_tokens: np.ndarray,
        scored_len: np.ndarray,
        n_scored: np.ndarray,
        rows: np.ndarray,
    ):
        self.all_ids, self.input_ids, self.response_mask = ids, input_ids, response_mask
        self.n_tokens, self.scored_len, self.n_scored = n_tokens, scored_len, n_scored
        self.rows = np.asarray(rows, dtype=np.int64)

    @classmethod
    def from_table(cls, table: pa.Table, rows: np.ndarray) -> RenderedItems:
        def ints(name: str) -> np.ndarray:
            return table.column(name).fill_null(0).to_numpy().astype(np.int64)

        return cls(
            table.column("example_id").to_pylist(),
            _ListColumn(table.column("input_ids")),
            _ListColumn(table.column("response_mask")),
            ints("n_tokens"),
            ints("scored_len"),
            ints("n_response_tokens"),
            rows,
        )

    def _view(self, rows: np.ndarray) -> RenderedItems:
        cols = (self.n_tokens, self.scored_len, self.n_scored)
        return RenderedItems(self.all_ids, self.input_ids, self.response_mask, *cols, rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        from profiler.scoring.base import ScoreItem

        if isinstance(i, slice):
            return self._view(self.rows[i])
        row = int(self.rows[i])
        return ScoreItem(self.all_ids[row], self.input_ids[row], self.response_mask[row].view(bool))

    @property
    def ids(self) -> list[str]:
        """The example ids of this view, in order."""
        return [self.all_ids[r] for r in self.rows]

    def lengths(self, trim: bool = False) -> np.ndarray:
        """Token counts, or (``trim``) counts up to the last response token, as scoring without embeddings runs."""
        return (self.scored_len if trim else self.n_tokens)[self.rows]

    def subset(self, positions: Sequence[int]) -> RenderedItems:
        """The items at ``positions`` of this view."""
        return self._view(self.rows[np.asarray(positions, dtype=np.int64)])

    def where(self, keep: Callable[[str], bool]) -> RenderedItems:
        """The items whose example id ``keep`` accepts."""
        return self.subset([i for i, eid in enumerate(self.ids) if keep(eid)])

    def alone(self, start: Sequence[int]) -> AloneItems:
        """IFD's responses-alone items (:func:`profiler.ifd.alone_item`) of the rows with a token to score alone."""
        need = 1 if len(start) else 2  # without a start token the first response token is context only
        return AloneItems(self.subset(np.flatnonzero(self.n_scored[self.rows] >= need)), list(start))


class AloneItems(Sequence):
    """The responses alone of some rendered items: ``start`` tokens, then every scored response token."""

    def __init__(self, base: RenderedItems, start: list[int]):
        self.base, self.start = base, start

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        from profiler.ifd import alone_item

        if isinstance(i, slice):
            return AloneItems(self.base[i], self.start)
        return alone_item(self.base[i], self.start)

    @property
    def ids(self) -> list[str]:
        return self.base.ids

    def lengths(self, trim: bool = False) -> np.ndarray:
        return len(self.start) + self.base.n_scored[self.base.rows]

    def subset(self, positions: Sequence[int]) -> AloneItems:
        return AloneItems(self.base.subset(positions), self.start)

    def where(self, keep: Callable[[str], bool]) -> AloneItems:
        return AloneItems(self.base.where(keep), self.start)


def item_lengths(items: Sequence, trim: bool = False) -> Sequence[int]:
    """Each item's token count (``trim``: up to its last response token), without building views that have them."""
    if hasattr(items, "lengths"):
        return items.lengths(trim).tolist()
    if trim:
        return [_trimmed_length(it) for it in items]
    return [len(it.input_ids) for it in items]


def _trimmed_length(item) -> int:
    positions = np.flatnonzero(np.asarray(item.response_mask, dtype=bool))
    return int(positions[-1]) + 1 if len(positions) else len(item.input_ids)


def keep_items(items: Sequence, keep: Callable[[str], bool]) -> Sequence:
    """The items whose example id ``keep`` accepts: a view of a view, a list of a list."""
    if hasattr(items, "where"):
        return items.where(keep)
    return [it for it in items if keep(it.example_id)]
