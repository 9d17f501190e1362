"""The Ray Data path: the same scorer in Ray actors (a local one-machine Ray instance here) gives the same table."""

from __future__ import annotations

import pytest

from profiler import open_table
from profiler.config import ScoreConfig
from profiler.pipeline import run_score
from tests.profiler.test_vllm import make_adapter

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]')")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_path_matches_the_local_scorer(tiny_llama, profile_data, tmp_path, local_ray):
    ckpts = [make_adapter(tiny_llama, tmp_path / "adapter", seed=3), str(tiny_llama)]
    tables = {}
    for name, ray_address in (("local", None), ("ray", "auto")):
        cfg = ScoreConfig(
            model=str(tiny_llama),
            data=profile_data,
            out=str(tmp_path / f"{name}.duckdb"),
            checkpoints=ckpts,
            ray=ray_address,
            dtype="float32",
            on_error="skip",
            progress=False,
            projection="pca",
            token_scores="all",
        )
        with open_table(run_score(cfg)) as t:
            tables[name] = (
                t.scores.sort("example_id", "checkpoint_id"),
                t.embeddings.sort("example_id"),
                t.confidence.select("example_id", "split").sort("example_id").rows(),
                t.token_scores(),
                t.ifd,
            )
    (sa, ea, ca, ta, ia), (sb, eb, cb, tb, ib) = tables["local"], tables["ray"]
    # Token scores (both checkpoints) and IFD (the last one) come through the actors too.
    assert (
        ta.select("example_id", "checkpoint_id", "tokens").rows()
        == tb.select("example_id", "checkpoint_id", "tokens").rows()
    )
    assert tb.height == 2 * 30
    for na, nb in zip(ta["nll"], tb["nll"]):
        assert list(nb) == pytest.approx(list(na), abs=1e-5)
    assert (
        ia.select("example_id", "checkpoint_id", "n_tokens").rows()
        == ib.select("example_id", "checkpoint_id", "n_tokens").rows()
    )
    assert ib.height == 30 and ib["ifd"].to_list() == pytest.approx(ia["ifd"].to_list(), rel=1e-5)
    assert (
        sa.select("example_id", "checkpoint_id", "n_tokens").rows()
        == sb.select("example_id", "checkpoint_id", "n_tokens").rows()
    )
    assert sb["mean_nll"].to_list() == pytest.approx(sa["mean_nll"].to_list(), rel=1e-5)
    assert ea["example_id"].to_list() == eb["example_id"].to_list() and eb.height == 30
    for va, vb in zip(ea["vector"], eb["vector"]):
        assert list(vb) == pytest.approx(list(va), rel=1e-4, abs=1e-5)
    assert ca == cb
