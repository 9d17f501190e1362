"""Arrow columns built in bulk: one concatenated buffer and its offsets per list column.

Converting a Python list of per-row arrays (numpy arrays, lists of floats or of strings) one row at a time, as
``datasets`` and polars do, costs tens of microseconds a row; the map functions of the data stage and the table
writer's score batches build their list columns here instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa


def list_array(values: Sequence, item: pa.DataType) -> pa.ListArray:
    """A list column of ``item`` values, one list per element of ``values`` (each a numpy array or a sequence;
    none may be None): one buffer of every value and the rows' int32 offsets."""
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError(f"a list column of {offsets[-1]:,} values does not fit 32-bit offsets: write fewer rows")
    if pa.types.is_string(item) or pa.types.is_large_string(item):
        flat = pa.array(list(itertools.chain.from_iterable(values)), type=item)
    else:
        dtype = item.to_pandas_dtype()
        flat = pa.array(
            np.concatenate([np.asarray(v, dtype=dtype) for v in values]) if len(values) else np.zeros(0, dtype)
        )
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), flat)


def arrow_batch(columns: Mapping[str, Sequence], schema: pa.Schema) -> pa.Table:
    """``columns`` as an Arrow table of ``schema`` (every column of it, in its order): list columns through
    :func:`list_array`, the others as they are."""
    arrays = [
        list_array(columns[f.name], f.type.value_type)
        if pa.types.is_list(f.type)
        else pa.array(columns[f.name], f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)
