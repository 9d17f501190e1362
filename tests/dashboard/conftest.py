"""Small real profiles (a tiny model really fine-tuned and scored) for the dashboard's tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from profiler.finetune import FinetuneConfig
from profiler.profile_run import run_profile
from profiler.score_run import ScoreConfig, run_score
from tests.conftest import write_jsonl

WORDS = ["permit", "building", "weeks", "hello", "machine", "blue", "sky", "one", "two", "three", "science"]
N_FAQ, N_CHAT, N_BAD = 20, 10, 1


def _data(root: Path) -> list[str]:
    rng = random.Random(0)
    faq = [
        {
            "instruction": f"Question {i}: " + " ".join(rng.choices(WORDS, k=4)),
            "output": " ".join(rng.choices(WORDS, k=8)),
        }
        for i in range(N_FAQ)
    ]
    faq[3]["instruction"] = "What is a building permit? '; DROP TABLE examples; --"
    faq.append({"instruction": "An example with no answer", "output": ""})  # kept as a bad row (status)
    chat = [
        {
            "messages": [
                {"role": "user", "content": f"Chat {i}: " + " ".join(rng.choices(WORDS, k=3))},
                {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=5))},
            ]
        }
        for i in range(N_CHAT)
    ]
    return [f"faq={write_jsonl(root / 'faq.jsonl', faq)}", f"chat={write_jsonl(root / 'chat.jsonl', chat)}"]


@pytest.fixture(scope="session")
def profile_data(tmp_path_factory) -> list[str]:
    return _data(tmp_path_factory.mktemp("dash_data"))


@pytest.fixture(scope="session")
def small_profile(tmp_path_factory, tiny_llama, profile_data) -> Path:
    """A profile of 31 rows (20 FAQ, 10 chat, 1 bad) with 3 checkpoints, embeddings and a UMAP map."""
    out = tmp_path_factory.mktemp("dash_profile") / "run.duckdb"
    score = ScoreConfig(model=str(tiny_llama), data=profile_data, out=str(out), on_error="skip", progress=False)
    ft = FinetuneConfig(n_checkpoints=3, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0)
    run_profile(score, ft)
    return out


@pytest.fixture(scope="session")
def other_profile(tmp_path_factory, tiny_llama, profile_data) -> Path:
    """The same data scored by the untrained base model alone: a second reference for the compare page."""
    out = tmp_path_factory.mktemp("dash_other") / "base.duckdb"
    cfg = ScoreConfig(model=str(tiny_llama), data=profile_data, out=str(out), on_error="skip", progress=False)
    run_score(cfg)
    return out
