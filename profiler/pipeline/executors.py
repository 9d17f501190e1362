"""Where `sftmix score` runs: the dispatch above the single runs of :mod:`profiler.pipeline.run`.

=====================  ==================  ==============================================================
executor               asked for by        what runs
=====================  ==================  ==============================================================
one run                (default)           :func:`~profiler.pipeline.run.score_table` in this process
one shard              ``--shard k/N``     :func:`~profiler.pipeline.run.score_part` in this process (a job
                                           array's task, another node); `sftmix merge` joins the parts
workers on one node    ``--workers N``     :func:`run_workers`: the data rendered once here, then N fresh
                                           interpreters (:mod:`profiler.pipeline.worker`), worker k running
                                           ``score_part`` of shard k/N on GPU k, then the parts merged
ranks of a launcher    torchrun / accel.   `sftmix profile` only: every rank runs the same stages (rank 0
                                           renders, the others map its cache; the fine-tune is data
                                           parallel), and its score stage gives rank k the shard k/N
=====================  ==================  ==============================================================

A worker or shard runs the single run directly, never this dispatch again. Ray is a scoring backend
(``--backend ray``), not an executor: it spreads one run's checkpoints over a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from profiler.config import ScoreConfig
from profiler.errors import SftmixError
from profiler.pipeline.prepare import prepare_data
from profiler.pipeline.run import resolve_models, score_part, score_table
from profiler.pipeline.shards import merge_parts, part_path


def run_score(cfg: ScoreConfig, *, stop_after_batches: int | None = None, command: list[str] | None = None) -> str:
    """`sftmix score`: score every usable example at every checkpoint and write the confidence table.

    With ``cfg.shard`` only that slice is scored, into a part file (no confidence until `sftmix merge`); with
    ``cfg.workers`` other than 1, one worker process per shard runs on this node and the parts are merged. A
    re-run with the same ``out`` resumes. ``command``, the command line that started the run, is recorded in
    ``meta`` (what resumes it).

    Returns:
        The table (or part file) path.
    """
    cfg = resolve_models(cfg)
    if cfg.workers != 1:
        return run_workers(cfg)
    if cfg.shard:
        return score_part(cfg, stop_after_batches=stop_after_batches, command=command)
    return score_table(cfg, stop_after_batches=stop_after_batches, command=command)


def run_workers(cfg: ScoreConfig) -> str:
    """One scoring process per shard on this node (worker k on GPU k), then the parts merged into ``cfg.out``."""
    import torch

    n_gpus = torch.cuda.device_count()
    on_gpu = cfg.device in ("auto", "cuda") and n_gpus > 0
    n = cfg.workers or n_gpus
    if n < 1:
        raise SftmixError("--workers 0 means one worker per GPU, and no GPU is visible; give a number")
    threads = 0 if on_gpu else max(1, (os.cpu_count() or 1) // n)
    prepare_data(replace(cfg, workers=1))  # renders the data once, here: every worker maps the cache
    procs = []
    with tempfile.TemporaryDirectory(prefix="sftmix-workers-") as tmp:
        for k in range(n):
            device = f"cuda:{k % n_gpus}" if on_gpu else cfg.device
            wcfg = replace(cfg, shard=f"{k}/{n}", workers=1, device=device, progress=cfg.progress and k == 0)
            spec = Path(tmp) / f"worker-{k}.json"
            spec.write_text(json.dumps(asdict(wcfg)), encoding="utf-8")
            procs.append(subprocess.Popen([sys.executable, "-m", "profiler.pipeline.worker", str(spec), str(threads)]))
        for p in procs:
            p.wait()
    failed = [k for k, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise SftmixError(
            f"scoring worker(s) {failed} of {n} failed; re-run the same command (finished shards are kept) "
            f"or one shard alone with --shard k/{n}"
        )
    parts = [part_path(cfg.out, k, n) for k in range(n)]
    merge_parts(
        cfg.out,
        parts,
        n_bins=cfg.n_bins,
        projection=cfg.projection if cfg.embed else "none",
        projection_seed=cfg.projection_seed,
        projection_sample=cfg.projection_sample,
    )
    return cfg.out
