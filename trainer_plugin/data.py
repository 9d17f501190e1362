"""Training data from a profile: examples with their split, re-rendered with the target's tokenizer.

The reference and the target may tokenize differently (weak-to-strong), so only the messages and the
split travel; token ids are made here. A user's own dataset can replace the profile's copy of the data:
it is joined by example id (a hash of the content), so it must hold the same examples.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from profiler import open_table
from profiler.data import Renderer, load_examples
from profiler.data.formats import Example
from profiler.data.render import pad_batch
from profiler.errors import DataError, SftmixError

log = logging.getLogger(__name__)


class ProfileMismatch(SftmixError):
    """The training data and the profile do not describe the same examples."""


@dataclass
class TrainingSet:
    """Rendered training examples and what happened to each profile example."""

    rows: list[dict]
    n_profile: int
    n_dropped: int
    n_truncated: int

    @property
    def confident(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r["confident"]]

    @property
    def unconfident(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if not r["confident"]]


class SplitDataset(torch.utils.data.Dataset):
    """Items ``{"input_ids", "labels", "confident"}`` for :class:`PairCollator`."""

    def __init__(self, rows: Sequence[dict]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def _profile_examples(profile: str) -> dict[str, tuple[list[dict], str]]:
    with open_table(profile) as t:
        frame = t.split_examples()
    if frame.is_empty():
        raise ProfileMismatch(f"{profile} has no confidence split yet; finish `sftmix profile` (or score) first")
    return {
        eid: (json.loads(msgs), split)
        for eid, msgs, split in frame.select("example_id", "messages", "split").iter_rows()
    }


def load_training_set(
    profile: str,
    tokenizer,
    *,
    data: Sequence[str] | None = None,
    template: str = "auto",
    max_length: int = 2048,
) -> TrainingSet:
    """Render the profile's split examples (or ``data`` joined to the profile) for the target tokenizer.

    Examples longer than ``max_length`` are truncated; those left with no response token are dropped
    and counted.

    Raises:
        ProfileMismatch: the profile has no split, or ``data`` holds examples the profile does not.
    """
    by_id = _profile_examples(profile)
    if data:
        loaded = load_examples(list(data), on_error="raise")
        unknown = [r for r in loaded if r.example_id not in by_id]
        if unknown:
            first = unknown[0]
            raise ProfileMismatch(
                f"{len(unknown)} of {len(loaded)} training examples are not in the profile {profile} "
                f"(first: {first.source_file}, row {first.file_row}); profile this dataset first"
            )
        items = [(r.example_id, r.example.messages, by_id[r.example_id][1]) for r in loaded]
    else:
        items = [(eid, msgs, split) for eid, (msgs, split) in by_id.items()]
    renderer = Renderer(tokenizer, template, max_length, truncate=True)
    rows, dropped, truncated = [], 0, 0
    for eid, msgs, split in items:
        try:
            r = renderer.render(Example(msgs))
        except DataError as e:
            dropped += 1
            log.warning("example %s dropped: %s", eid, e.reason)
            continue
        truncated += r.truncated
        rows.append(
            {"example_id": eid, "input_ids": r.input_ids, "labels": r.labels(), "confident": split == "confident"}
        )
    if dropped:
        log.warning(
            "%d of %d examples had no response token within max_length=%d and were dropped",
            dropped,
            len(items),
            max_length,
        )
    return TrainingSet(rows, len(items), dropped, truncated)


def hold_out(rows: Sequence[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split rows into (train, held out), stratified by split: ``round(fraction * n)`` of each split's ``n`` rows
    (at least one), drawn with ``seed``. The draw depends only on the example ids, not on the rows' order."""
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for flag in (True, False):
        ids = sorted(r["example_id"] for r in rows if r["confident"] is flag)
        k = max(1, round(fraction * len(ids))) if ids else 0
        held.update(ids[i] for i in rng.permutation(len(ids))[:k])
    return [r for r in rows if r["example_id"] not in held], [r for r in rows if r["example_id"] in held]


def split_counts(rows: Sequence[dict]) -> dict[str, int]:
    n = sum(bool(r["confident"]) for r in rows)
    return {"confident": n, "unconfident": len(rows) - n}


class PairCollator:
    """Pads a batch laid out as [confident..., unconfident...] and checks that layout."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        k = len(features) // 2
        flags = [f["confident"] for f in features]
        if len(features) % 2 or not all(flags[:k]) or any(flags[k:]):
            raise RuntimeError(
                "a batch is not [confident..., unconfident...]; was the PairedSampler replaced "
                "(e.g. by group_by_length)?"
            )
        return pad_batch(features, self.pad_token_id)


class EvalCollator:
    """Pads evaluation batches (any mix of splits) and keeps each row's split as a ``confident`` tensor."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_batch(features, self.pad_token_id)
        batch["confident"] = torch.tensor([bool(f["confident"]) for f in features])
        return batch
