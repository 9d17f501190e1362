"""profiler.data.arrow: list columns built in bulk hold exactly the rows they were given."""

import numpy as np
import pyarrow as pa
import pytest

from profiler.data.arrow import arrow_batch, list_array


def test_list_array_holds_each_row_in_order():
    rows = [np.array([1.5, 2.0], np.float32), [0.25], np.zeros(0, np.float64), [3, 4, 5]]
    got = list_array(rows, pa.float32())
    assert got.type == pa.list_(pa.float32())
    assert got.to_pylist() == [[1.5, 2.0], [0.25], [], [3.0, 4.0, 5.0]]


def test_list_array_of_strings_and_arrow_batch():
    table = arrow_batch(
        {"id": ["a", "b"], "tokens": [("x", " y"), ["z"]]},
        pa.schema([("id", pa.string()), ("tokens", pa.list_(pa.string()))]),
    )
    assert table.to_pylist() == [{"id": "a", "tokens": ["x", " y"]}, {"id": "b", "tokens": ["z"]}]


def test_token_frame_matches_the_row_by_row_frame():
    import polars as pl

    from profiler.table.writer import TOKEN_SCORE_COLUMNS, _token_frame

    rng = np.random.default_rng(0)
    per_token = [rng.random(int(n), dtype=np.float32) for n in rng.integers(0, 50, 200)]
    ids = [f"e{i}" for i in range(200)]
    expected = pl.DataFrame(
        {"example_id": ids, "checkpoint_id": [7] * 200, "nll": per_token}, schema=TOKEN_SCORE_COLUMNS
    )
    assert _token_frame(7, ids, per_token).equals(expected)


def test_list_array_refuses_more_than_32_bit_offsets_hold():
    class Long:
        def __len__(self):
            return 2**31

    with pytest.raises(ValueError, match="32-bit offsets"):
        list_array([Long()], pa.float32())
