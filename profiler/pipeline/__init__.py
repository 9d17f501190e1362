"""The run: the stage list of `sftmix profile` and `sftmix score`, the per-checkpoint score loop over a backend,
and the executors (shards and their merge, workers on one node; Ray is a scoring backend)."""

from profiler.pipeline.run import profile, run_profile, run_score

__all__ = ["profile", "run_profile", "run_score"]
