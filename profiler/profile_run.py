"""`sftmix profile`: fine-tune the reference model, score every checkpoint, compute confidence.

Stages run in order and are recorded in the table's ``meta`` (``stages``); a re-run resumes at the first
unfinished one, reusing saved checkpoints and scores.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from profiler.checkpoints import check_compatible, discover_checkpoints
from profiler.errors import SftmixError, TableError
from profiler.finetune import FinetuneConfig, finetune
from profiler.score_run import (
    ScoreConfig,
    finish_confidence,
    finish_projection,
    open_run,
    prepare_data,
    score_checkpoints,
)
from profiler.table.writer import CheckpointInfo, TableWriter

log = logging.getLogger(__name__)
STAGES = ("data", "finetune", "score", "confidence", "embed")


def default_checkpoint_dir(out: str | Path) -> Path:
    """``run.duckdb`` -> ``run_checkpoints/`` beside it."""
    p = Path(out)
    return p.with_name(p.stem + "_checkpoints")


def _stage(i: int, text: str, progress: bool) -> None:
    if progress:
        print(f"[stage {i}/{len(STAGES)}] {text}", file=sys.stderr, flush=True)


def _mark(table: TableWriter, stage: str, started: float) -> float:
    """Record a finished stage and its wall time (added up over resumed runs); returns the time now."""
    now = time.perf_counter()
    stages = table.get_meta("stages") or {}
    seconds = table.get_meta("stage_seconds") or {}
    stages[stage] = "done"
    seconds[stage] = round(seconds.get(stage, 0.0) + now - started, 2)
    table.set_meta({"stages": stages, "stage_seconds": seconds})
    return now


# Settings that may change between a run and its resumption without changing what it computes.
_RESUMABLE = ("keep_checkpoints", "checkpoint_dir")


def _check_same_finetune(table: TableWriter, ft_cfg: FinetuneConfig, checkpoints_from: str | None) -> None:
    """A resumed profile must fine-tune (or take checkpoints) as the run it resumes did."""
    if not (table.get_meta("stages") or {}).get("finetune"):
        return
    old = {k: v for k, v in (table.get_meta("finetune_config") or {}).items() if k not in _RESUMABLE}
    new = {k: v for k, v in asdict(ft_cfg).items() if k not in _RESUMABLE}
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if table.get_meta("checkpoints_from") != checkpoints_from:
        changed["checkpoints_from"] = (table.get_meta("checkpoints_from"), checkpoints_from)
    if changed:
        raise TableError(
            f"{table.path} was profiled with other fine-tuning settings {changed} (old, new); use a new --out"
        )


def _pruner(cfg: FinetuneConfig, checkpoints: list[CheckpointInfo], owned: bool):
    """Deletes checkpoint weights after scoring, as ``keep_checkpoints`` asks (never a user's own checkpoints)."""
    keep_last = checkpoints[-1].path if checkpoints else None

    def prune(info: CheckpointInfo) -> None:
        if not owned or cfg.keep_checkpoints == "all" or (cfg.keep_checkpoints == "last" and info.path == keep_last):
            return
        shutil.rmtree(info.path, ignore_errors=True)

    return prune


def run_profile(
    score_cfg: ScoreConfig,
    ft_cfg: FinetuneConfig,
    *,
    checkpoints_from: str | None = None,
    fail_after_checkpoints: int | None = None,
) -> str:
    """Profile a dataset end to end and return the table path.

    Args:
        score_cfg: data, rendering and scoring settings (``score_cfg.model`` is the reference model).
        ft_cfg: reference fine-tuning settings.
        checkpoints_from: score a user's existing checkpoints instead of fine-tuning.
        fail_after_checkpoints: testing hook; crash right after saving that many checkpoints.
    """
    if score_cfg.shard or score_cfg.workers != 1:
        raise SftmixError(
            "profile fine-tunes in one job; to spread the scoring, run `sftmix score --checkpoint DIR --shard i/N` "
            "(or --workers N) on its checkpoints"
        )
    progress = score_cfg.progress
    t = time.perf_counter()
    _stage(1, "loading and rendering data", progress)
    prepared = prepare_data(score_cfg)
    ckpt_dir = Path(ft_cfg.checkpoint_dir or default_checkpoint_dir(score_cfg.out))
    with open_run(score_cfg, prepared) as table:
        _check_same_finetune(table, ft_cfg, checkpoints_from)
        table.set_meta(
            {"finetune_config": asdict(ft_cfg), "checkpoints_from": checkpoints_from, "checkpoint_dir": str(ckpt_dir)}
        )
        t = _mark(table, "data", t)
        stages = table.get_meta("stages") or {}
        if stages.get("finetune") == "done":
            _stage(2, "fine-tuning: done before, reusing its checkpoints", progress)
            checkpoints = table.checkpoint_infos()
        elif checkpoints_from:
            _stage(2, f"fine-tuning: skipped, scoring the checkpoints in {checkpoints_from}", progress)
            checkpoints = discover_checkpoints(score_cfg.model, [checkpoints_from])
            check_compatible(score_cfg.model, checkpoints)
        else:
            _stage(2, f"fine-tuning the reference model, {ft_cfg.n_checkpoints} checkpoints in {ckpt_dir}", progress)
            dirs = finetune(
                score_cfg.model,
                prepared.ok_items(),
                ft_cfg,
                ckpt_dir,
                pad_token_id=prepared.tokenizer.pad_token_id or 0,
                device=score_cfg.device,
                progress=progress,
                fail_after_checkpoints=fail_after_checkpoints,
            )
            checkpoints = discover_checkpoints(score_cfg.model, [str(d) for d in dirs])
        table.register_checkpoints(checkpoints)
        t = _mark(table, "finetune", t)
        _stage(3, f"scoring {len(prepared.ok_items())} examples at {len(checkpoints)} checkpoints", progress)
        prune = _pruner(ft_cfg, checkpoints, owned=not checkpoints_from)
        ids = score_checkpoints(table, score_cfg, prepared, checkpoints, on_scored=prune)
        t = _mark(table, "score", t)
        _stage(4, "confidence and the median split", progress)
        finish_confidence(table, ids, score_cfg.n_bins)
        t = _mark(table, "confidence", t)
        if score_cfg.embed and score_cfg.projection != "none":
            _stage(5, f"semantic map of the embeddings ({score_cfg.projection})", progress)
            finish_projection(table, score_cfg)
        t = _mark(table, "embed", t)
    return score_cfg.out


def profile(*, checkpoints_from: str | None = None, **kwargs: Any) -> str:
    """Python entry point: ``profiler.profile(model=..., data=[...], out=..., n_checkpoints=3, lora=True)``.

    Keyword arguments are the fields of :class:`ScoreConfig` and :class:`FinetuneConfig`.
    """
    score_names = {f.name for f in dataclasses.fields(ScoreConfig)}
    ft_names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = set(kwargs) - score_names - ft_names
    if unknown:
        raise TypeError(f"unknown profile option(s): {sorted(unknown)}")
    if isinstance(kwargs.get("data"), str):
        kwargs["data"] = [kwargs["data"]]
    score_cfg = ScoreConfig(**{k: v for k, v in kwargs.items() if k in score_names})
    ft_cfg = FinetuneConfig(**{k: v for k, v in kwargs.items() if k in ft_names})
    return run_profile(score_cfg, ft_cfg, checkpoints_from=checkpoints_from)
