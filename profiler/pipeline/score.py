"""The per-checkpoint score loop: the same for every backend, resumable pair by pair."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import closing

from profiler.config import ScoreConfig, parse_shard
from profiler.pipeline.prepare import Prepared
from profiler.pipeline.shards import in_shard
from profiler.scoring.backends import BackendSettings, make_backend
from profiler.table.writer import CheckpointInfo, TableWriter

log = logging.getLogger(__name__)


def backend_settings(cfg: ScoreConfig, prepared: Prepared) -> BackendSettings:
    return BackendSettings(
        base_model=cfg.model,
        device=cfg.device,
        dtype=cfg.dtype,
        max_tokens=cfg.max_tokens,
        max_batch_size=cfg.max_batch_size,
        pad_token_id=prepared.pad_token_id,
        progress=cfg.progress,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        ray=cfg.ray,
    )


def score_checkpoints(
    table: TableWriter,
    cfg: ScoreConfig,
    prepared: Prepared,
    checkpoints: Sequence[CheckpointInfo],
    *,
    on_scored: Callable[[CheckpointInfo], None] | None = None,
    stop_after_batches: int | None = None,
) -> list[int]:
    """Score every usable example (of this shard) at each checkpoint, skipping pairs already in the table.

    The last checkpoint's pass also embeds each example when ``cfg.embed``.

    Args:
        on_scored: called with each checkpoint once all its scores are written (e.g. to delete its weights).
        stop_after_batches: testing hook; raise after this many written batches to simulate a crash.

    Returns:
        The checkpoint ids, in order.
    """
    ids = table.register_checkpoints(checkpoints)
    items = prepared.ok_items()
    shard = parse_shard(cfg.shard)
    if shard:
        items = [it for it in items if in_shard(it.example_id, *shard)]
    backend = make_backend(cfg.backend, backend_settings(cfg, prepared), checkpoints, items)
    written = 0
    try:
        for i, (info, cid) in enumerate(zip(checkpoints, ids)):
            embed = cfg.embed and i == len(checkpoints) - 1  # embeddings come from the last checkpoint's pass
            done = table.scored_ids(cid)
            if embed:
                done &= table.embedded_ids()
                table.set_meta({"embedding_checkpoint": cid})
            todo = [it for it in items if it.example_id not in done]
            if todo:
                desc = f"scoring checkpoint {cid + 1}/{len(ids)}"
                with backend.open_checkpoint(info, embed=embed) as scorer, closing(scorer.score(todo, desc)) as batches:
                    for batch in batches:
                        table.write_scores(cid, batch)
                        written += 1
                        if stop_after_batches is not None and written >= stop_after_batches:
                            raise RuntimeError("stopped by stop_after_batches (test hook)")
            else:
                log.info("checkpoint %s: all %d examples already scored", info.path, len(items))
            if on_scored is not None:
                on_scored(info)
    finally:
        backend.close()
    return ids
