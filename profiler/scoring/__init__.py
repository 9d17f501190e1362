"""Scoring backends: per-example response NLL at one checkpoint. ``torch`` is always there."""

from profiler.scoring.base import ExampleScore, ScoreItem, Scorer
from profiler.scoring.batching import token_budget_batches
from profiler.scoring.torch_backend import TorchScorer

__all__ = ["ExampleScore", "ScoreItem", "Scorer", "TorchScorer", "token_budget_batches"]
