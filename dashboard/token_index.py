"""The hard-tokens page's index of a table: every example's token totals, by token key, in flat arrays.

Counting hard tokens means unnesting every scored token of the examples counted, and a million examples hold about
a hundred million. Doing that in DuckDB for each filter reads every example's token lists (a filter is a semi-join,
which prunes nothing), so it costs seconds however few examples the filter keeps. The index does that work once per
table: for each example (by its ``row_index``) the keys (:func:`dashboard.queries.token_key`) it holds, with each
key's occurrences and NLL sum in it. Totals over any set of examples then gather only those examples' entries and
sum them per key (:meth:`TokenIndex.totals`), at a cost in proportion to what they hold.

Layout (what :class:`TokenIndex` holds and :mod:`dashboard.cache` keeps beside the table as ``.npy`` files, read
back memory-mapped):

- ``keys``: the distinct non-empty keys, sorted; a key's id is its position.
- ``start``, ``length`` (one per ``row_index``): where the example's entries begin in the entry arrays and how many
  there are (0 for an example without token scores, or whose tokens all have the empty key).
- ``key``, ``n``, ``s`` (one per entry, an example's entries together): the key id, its occurrences in the example
  and their NLL sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

ARRAYS = ("start", "length", "key", "n", "s")


@dataclass
class TokenIndex:
    keys: list[str]
    start: np.ndarray  # int64, per row_index
    length: np.ndarray  # int32, per row_index
    key: np.ndarray  # int32, per entry
    n: np.ndarray  # int32, per entry
    s: np.ndarray  # float32, per entry
    info: dict[str, Any] = field(default_factory=dict)  # checkpoint_id, step, fraction of the checkpoint indexed

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAYS}

    def totals(self, rows: np.ndarray | None = None) -> tuple[pl.DataFrame, int]:
        """Each key's totals over the examples at ``rows`` (row indices; None: every example): the frame ``token``,
        ``n`` (occurrences), ``s`` (NLL sum), ``examples`` (holding it), keys seen at least once, in key order;
        and how many of those examples hold any key."""
        if rows is None:
            key, n, s = self.key, self.n, self.s
            examples = int(np.count_nonzero(self.length))
        else:
            rows = np.asarray(rows, dtype=np.int64)
            rows = rows[(rows >= 0) & (rows < len(self.length))]
            starts, lengths = self.start[rows], self.length[rows].astype(np.int64)
            held = lengths > 0
            starts, lengths = starts[held], lengths[held]
            examples = int(held.sum())
            # Every entry of the chosen examples: each example's start repeated over its entries, plus 0, 1, ...
            ends = np.cumsum(lengths)
            pos = np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if examples else 0)
            key, n, s = self.key[pos], self.n[pos], self.s[pos]
        size = len(self.keys)
        per_key = np.bincount(key, minlength=size)
        seen = np.flatnonzero(per_key)
        frame = pl.DataFrame(
            {
                "token": pl.Series([self.keys[i] for i in seen.tolist()], dtype=pl.String),
                "n": np.bincount(key, weights=n, minlength=size)[seen].round().astype(np.int64),
                "s": np.bincount(key, weights=s, minlength=size)[seen],
                "examples": per_key[seen].astype(np.int64),
            }
        )
        return frame, examples


def build(batches: Iterable[pa.RecordBatch], rows: int, key_of: Callable[[str], str], info: dict) -> TokenIndex:
    """The index of token rows: record batches of ``row_index`` (below ``rows``), ``nll`` (list of float) and
    ``tokens`` (list of string, the same length), at one checkpoint. A row without token texts, or whose lists
    differ in length, holds nothing (unnesting such lists pairs no token with its NLL). ``key_of`` maps a token's
    text to its key; tokens whose key is empty are left out."""
    ids: dict[str, int] = {}  # key -> id, in the order first met
    keyed: dict[str, str] = {}  # text -> key, each text's key computed once
    start = np.zeros(rows, dtype=np.int64)
    length = np.zeros(rows, dtype=np.int32)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    offset = 0
    for batch in batches:
        tokens, nll = batch.column("tokens"), batch.column("nll")
        sizes = pc.list_value_length(tokens)
        ok = pc.and_(pc.is_valid(tokens), pc.equal(sizes, pc.list_value_length(nll))).fill_null(False)
        if not pc.all(ok).as_py():
            batch = batch.filter(ok)
            tokens, nll, sizes = batch.column("tokens"), batch.column("nll"), pc.list_value_length(batch["tokens"])
        if batch.num_rows == 0:
            continue
        row_index = batch.column("row_index").to_numpy().astype(np.int64)
        counts = sizes.to_numpy(zero_copy_only=False).astype(np.int64)
        encoded = pc.dictionary_encode(tokens.flatten())
        texts = encoded.dictionary.to_pylist()
        for t in texts:
            if t not in keyed:
                keyed[t] = key_of(t or "")
        lut = np.array([ids.setdefault(keyed[t], len(ids)) if keyed[t] else -1 for t in texts], dtype=np.int64)
        kid = lut[encoded.indices.to_numpy(zero_copy_only=False)] if len(texts) else np.zeros(0, np.int64)
        values = nll.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        local = np.repeat(np.arange(batch.num_rows, dtype=np.int64), counts)
        keep = kid >= 0
        # One entry per (example, key): sorting the pair codes puts each example's entries together.
        pairs, inverse, n = np.unique((local[keep] << 32) | kid[keep], return_inverse=True, return_counts=True)
        s = np.bincount(inverse.ravel(), weights=values[keep], minlength=len(pairs))
        per_row = np.bincount(pairs >> 32, minlength=batch.num_rows)
        start[row_index] = offset + np.cumsum(per_row) - per_row
        length[row_index] = per_row
        parts.append(((pairs & 0xFFFFFFFF).astype(np.int64), n.astype(np.int32), s.astype(np.float32)))
        offset += len(pairs)
    # Key ids in key order: the same ids whatever order the rows came in.
    keys = sorted(ids)
    relabel = np.empty(len(ids), dtype=np.int32)
    relabel[[ids[k] for k in keys]] = np.arange(len(keys), dtype=np.int32)
    key = np.concatenate([relabel[p[0]] for p in parts]) if parts else np.zeros(0, np.int32)
    n = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32)
    s = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float32)
    return TokenIndex(keys, start, length, key, n, s, dict(info))
