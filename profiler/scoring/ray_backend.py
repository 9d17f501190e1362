"""The Ray Data path: the same torch scorer in actors across a Ray cluster's nodes (``--ray auto``).

The driver renders the data and writes the table as usual; each checkpoint's pending examples become a Ray
dataset mapped by scorer actors (one per GPU where the cluster has GPUs), and the scores stream back to the
driver batch by batch. Model and checkpoint paths must be readable from every node (a shared filesystem or hub
names). ``--ray local`` starts a one-machine Ray instance instead of joining a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from profiler.errors import SftmixError
from profiler.scoring.base import BackendSettings, CheckpointScorer, ExampleScore, ScoreItem

RAY_HINT = "the Ray path needs Ray Data: pip install 'ray[data]'"


class _ScorerActor:
    """Loads one checkpoint once per actor and scores batches of examples with :class:`TorchScorer`."""

    def __init__(
        self,
        path: str,
        kind: str,
        base: str,
        dtype: str,
        max_tokens: int | None,
        pad: int,
        embed: bool,
        tokens: bool = False,
    ):
        import torch

        from profiler.hf import apply_adapter, load_causal_lm, resolve_device, resolve_dtype
        from profiler.scoring.torch_backend import TorchScorer

        device = resolve_device("auto")
        dt = resolve_dtype(dtype, device)
        if kind == "adapter":
            model = apply_adapter(load_causal_lm(base, device=device, dtype=dt), path)
        else:
            model = load_causal_lm(path, device=device, dtype=dt, base=base)
        if device.type == "cpu":
            torch.set_num_threads(max(1, int(os.environ.get("SFTMIX_RAY_THREADS", "1"))))
        self.scorer = TorchScorer(model, max_tokens=max_tokens, pad_token_id=pad)
        self.embed = embed
        self.tokens = tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        items = [
            ScoreItem(str(i), [int(t) for t in ids], [bool(m) for m in mask])
            for i, ids, mask in zip(batch["example_id"], batch["input_ids"], batch["response_mask"])
        ]
        scores = [s for b in self.scorer.score(items, progress=False, embed=self.embed, tokens=self.tokens) for s in b]
        out: dict[str, Any] = {
            "example_id": np.array([s.example_id for s in scores], dtype=object),
            "nll_sum": np.array([s.nll_sum for s in scores], dtype=np.float64),
            "n_tokens": np.array([s.n_tokens for s in scores], dtype=np.int64),
        }
        if self.embed:
            out["embedding"] = np.stack([s.embedding for s in scores])
        if self.tokens:  # ragged: one float32 vector per example
            out["token_nll"] = _object_array([s.token_nll for s in scores])
        return out


def _object_array(vectors: list) -> np.ndarray:
    """A 1-D object array of vectors of different lengths (``np.array`` would try to stack equal ones)."""
    out = np.empty(len(vectors), dtype=object)
    out[:] = vectors
    return out


def init_ray(address: str) -> Any:
    """Join the cluster at ``address`` (``auto``: the one this machine belongs to), or start one (``local``)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise SftmixError(RAY_HINT) from e
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    return ray


def ray_batches(
    address: str,
    info,
    todo: Sequence[ScoreItem],
    *,
    base: str,
    dtype: str,
    max_tokens: int | None,
    pad_token_id: int,
    embed: bool,
    tokens: bool = False,
    batch_size: int = 256,
) -> Iterator[list[ExampleScore]]:
    """Scores of ``todo`` at checkpoint ``info``, computed by Ray actors, yielded in batches as they arrive
    (with embeddings when ``embed``, per-token NLLs when ``tokens``)."""
    ray = init_ray(address)
    resources = ray.cluster_resources()
    n_gpus = int(resources.get("GPU", 0))
    workers = n_gpus or max(1, int(resources.get("CPU", 1)) // 2)
    ds = ray.data.from_items(
        [
            {
                "example_id": it.example_id,
                "input_ids": np.asarray(it.input_ids).tolist(),
                "response_mask": np.asarray(it.response_mask, dtype=bool).tolist(),
            }
            for it in todo
        ]
    )
    scored = ds.map_batches(
        _ScorerActor,
        fn_constructor_kwargs={
            "path": info.path,
            "kind": info.kind,
            "base": base,
            "dtype": dtype,
            "max_tokens": max_tokens,
            "pad": pad_token_id,
            "embed": embed,
            "tokens": tokens,
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=workers,
        num_gpus=1 if n_gpus else 0,
    )
    for batch in scored.iter_batches(batch_size=batch_size, batch_format="numpy"):
        vectors, per_token = batch.get("embedding"), batch.get("token_nll")
        yield [
            ExampleScore(
                str(i),
                float(s),
                int(n),
                None if vectors is None else np.asarray(vectors[k], np.float32),
                None if per_token is None else np.asarray(per_token[k], np.float32),
            )
            for k, (i, s, n) in enumerate(zip(batch["example_id"], batch["nll_sum"], batch["n_tokens"]))
        ]


class RayBackend:
    """The torch scorer in Ray Data actors across a cluster (``--ray auto|ADDRESS|local``)."""

    name = "ray"

    def __init__(self, settings: BackendSettings):
        self.s = settings

    @contextmanager
    def open_checkpoint(self, info: Any, *, embed: bool):
        s = self.s
        scorer = CheckpointScorer(
            lambda items, *, embed, tokens, **_: ray_batches(
                s.ray,
                info,
                items,
                base=s.model,
                dtype=s.dtype,
                max_tokens=s.max_tokens,
                pad_token_id=s.pad_token_id,
                embed=embed,
                tokens=tokens,
            ),
            embed=embed,
        )
        try:
            yield scorer
        finally:
            scorer.release()

    def close(self) -> None:
        return None
