"""Scoring on every GPU of one node: one worker process per shard (worker k on ``cuda:k``), then one merge."""

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
from profiler.pipeline.shards import merge_parts, part_path


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
