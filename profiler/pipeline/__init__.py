"""The run: the stage list of `sftmix profile` and `sftmix score` and their single runs (run.py), the dispatch to
one run, one shard or a node's workers (executors.py), the per-checkpoint score loop over a backend (score.py),
and shard parts and their merge (shards.py). Ray is a scoring backend."""

from profiler.pipeline.executors import run_score
from profiler.pipeline.run import profile, run_profile

__all__ = ["profile", "run_profile", "run_score"]
