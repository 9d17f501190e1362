"""`sftmix profile` and `sftmix score`: the stage list of a run, resumable from the table's ``meta``, and the
single runs (:func:`run_profile`, :func:`score_table`, :func:`score_part`) that :mod:`profiler.pipeline.executors`
dispatches to.

profile: data -> finetune -> score -> confidence -> embed. score: the same without fine-tuning (the given
checkpoints, or the model itself). A re-run with the same ``--out`` resumes: fine-tuning reuses its saved
checkpoints, scoring skips the (example, checkpoint) pairs already in the table.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from profiler.checkpoints import check_compatible, discover_checkpoints
from profiler.config import FinetuneConfig, ScoreConfig, parse_shard
from profiler.data.cache import default_cache_root
from profiler.errors import SftmixError, TableError
from profiler.pipeline.prepare import Prepared, open_run, prepare_data
from profiler.pipeline.ranks import Ranks, launcher_ranks
from profiler.pipeline.score import ifd_model_info, score_checkpoints
from profiler.pipeline.shards import part_path, remove_part
from profiler.pipeline.stages import Stage, done_stages, run_stages
from profiler.table.writer import CheckpointInfo, TableWriter, check_output_table

# Fine-tuning settings that may change between a run and its resumption without changing what it computes.
_RESUMABLE = ("keep_checkpoints", "checkpoint_dir")


@dataclass
class RunState:
    """What the stages of one run hand each other."""

    cfg: ScoreConfig
    ft: FinetuneConfig | None = None
    checkpoints_from: str | None = None
    fail_after_checkpoints: int | None = None
    stop_after_batches: int | None = None
    prepared: Prepared | None = None
    table: TableWriter | None = None  # rank 0's alone under a launcher
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    ranks: Ranks = field(default_factory=Ranks)
    done: dict[str, str] = field(default_factory=dict)  # the stages finished before (rank 0's table, broadcast)
    new_scores: int | None = None  # scores this run added (None: not known, so later stages run)
    command: list[str] | None = None  # the command line that started this run (None: from Python)


def default_checkpoint_dir(out: str | Path) -> Path:
    """``run.duckdb`` -> ``run_checkpoints/`` beside it."""
    p = Path(out)
    return p.with_name(p.stem + "_checkpoints")


def _checkpoint_dir(s: RunState) -> Path:
    return Path(s.ft.checkpoint_dir or default_checkpoint_dir(s.cfg.out))


# --- the stages -------------------------------------------------------------------------------------------
def _data_text(s: RunState) -> str:
    return f"loading and rendering data (or reading it from {s.cfg.cache_dir or default_cache_root(s.cfg.out)})"


def _data(s: RunState) -> None:
    with s.ranks.main_first():  # rank 0 renders, the others map its cache
        s.prepared = prepare_data(s.cfg)
    if s.cfg.progress and s.ft is not None:
        data = s.prepared.data
        how = "rendered" if data.built else "read from the cache, rendered before"
        print(f"  {data.n_rows} rows {how}: {data.path}", file=sys.stderr, flush=True)
    if s.ranks.main:
        s.table = open_run(s.cfg, s.prepared)
        s.done = dict(done_stages(s.table))
        # The latest segment's command: running it again resumes the run (`sftmix info` shows it).
        command = {"argv": s.command, "cwd": os.getcwd()} if s.command else None
        s.table.set_meta({"command": command})
    s.done = s.ranks.broadcast(s.done)
    if s.ft is None:
        s.checkpoints = discover_checkpoints(s.cfg.model, s.cfg.checkpoints)
    elif s.ranks.main:
        _check_same_finetune(s.table, s.ft, s.checkpoints_from)
        s.table.set_meta(
            {
                "finetune_config": asdict(s.ft),
                "checkpoints_from": s.checkpoints_from,
                "checkpoint_dir": str(_checkpoint_dir(s)),
                "launcher_world": s.ranks.world,
            }
        )


def _finetune_text(s: RunState) -> str:
    if s.done.get("finetune") == "done":
        return "fine-tuning: done before, reusing its checkpoints"
    if s.checkpoints_from:
        return f"fine-tuning: skipped, scoring the checkpoints in {s.checkpoints_from}"
    return f"fine-tuning the reference model, {s.ft.n_checkpoints} checkpoints in {_checkpoint_dir(s)}"


def _finetune(s: RunState) -> None:
    if s.done.get("finetune") == "done":
        s.checkpoints = s.ranks.broadcast(s.table.checkpoint_infos() if s.ranks.main else None)
    elif s.checkpoints_from:
        s.checkpoints = discover_checkpoints(s.cfg.model, [s.checkpoints_from])
        check_compatible(s.cfg.model, s.checkpoints)
    else:
        from profiler.finetune import finetune

        dirs = finetune(
            s.cfg.model,
            s.prepared.ok_items(),
            s.ft,
            _checkpoint_dir(s),
            pad_token_id=s.prepared.pad_token_id,
            device=s.cfg.device,
            progress=s.cfg.progress,
            fail_after_checkpoints=s.fail_after_checkpoints,
        )
        s.ranks.barrier()  # every rank's view of the checkpoints rank 0 saved
        s.checkpoints = discover_checkpoints(s.cfg.model, [str(d) for d in dirs])
    if s.ranks.main:
        s.table.register_checkpoints(s.checkpoints)


def _score(s: RunState) -> None:
    prune = _pruner(s.ft, s.checkpoints, owned=not s.checkpoints_from) if s.ft else None
    before = s.table.n_scores() if s.ranks.main else 0
    if s.ranks.world > 1:
        _score_ranks(s, prune)
    else:
        s.ids = score_checkpoints(
            s.table, s.cfg, s.prepared, s.checkpoints, on_scored=prune, stop_after_batches=s.stop_after_batches
        )
    if s.ranks.main:
        s.new_scores = s.table.n_scores() - before


def _score_text(s: RunState) -> str:
    text = f"scoring {len(s.prepared.ok_items())} examples at {len(s.checkpoints)} checkpoints" + (
        " and their IFD" if s.cfg.ifd else ""
    )
    return text + (" (done before: only what is missing)" if s.done.get("score") == "done" else "")


def _stage_settings(s: RunState, stage: str) -> dict:
    if stage == "confidence":
        return {"n_bins": s.cfg.n_bins}
    return {"projection": s.cfg.projection, "seed": s.cfg.projection_seed, "sample": s.cfg.projection_sample}


def _unchanged(s: RunState, stage: str) -> bool:
    """Whether ``stage`` finished in an earlier run with the same settings and this run scored nothing new: its
    result stands (a re-run of a finished profile does not fit UMAP again)."""
    if not (s.ranks.main and s.done.get(stage) == "done" and s.new_scores == 0):
        return False
    return (s.table.get_meta("stage_settings") or {}).get(stage) == _stage_settings(s, stage)


def _record_settings(s: RunState, stage: str) -> None:
    settings = s.table.get_meta("stage_settings") or {}
    s.table.set_meta({"stage_settings": {**settings, stage: _stage_settings(s, stage)}})


def _score_ranks(s: RunState, prune) -> None:
    """Each rank scores its shard into its part file (resumable alone), then rank 0 copies the parts' scores
    into the table, once, and removes the parts."""
    if s.done.get("score") != "done":
        k, n = s.ranks.rank, s.ranks.world
        cfg = replace(s.cfg, shard=f"{k}/{n}", out=str(part_path(s.cfg.out, k, n)))
        part = RunState(cfg, prepared=s.prepared.for_shard(cfg.shard), checkpoints=s.checkpoints)
        part.stop_after_batches = s.stop_after_batches
        ok = False
        try:
            _execute([PART_DATA, PART_SCORE], part)
            ok = True
        finally:
            if not s.ranks.all_ok(ok) and ok:
                raise SftmixError(f"another rank failed while scoring; re-run the same command to resume (rank {k})")
        if s.ranks.main:
            parts = [part_path(s.cfg.out, i, n) for i in range(n)]
            s.table.insert_scores_of_parts(parts)
            if prune is not None:  # the weights go once every rank has scored them
                for info in s.checkpoints:
                    prune(info)
            for p in parts:
                remove_part(p)
    if s.ranks.main:
        s.ids = s.table.register_checkpoints(s.checkpoints)


def _confidence(s: RunState) -> None:
    from profiler.confidence import compute_confidence

    if s.ranks.main and not _unchanged(s, "confidence"):
        s.table.write_confidence(compute_confidence(s.table.scores_frame(), s.ids, s.cfg.n_bins))
        _record_settings(s, "confidence")


def _embed(s: RunState) -> None:
    if s.ranks.main and s.cfg.embed and s.cfg.projection != "none" and not _embed_done(s):
        from profiler.embed import project_table

        project_table(s.table, method=s.cfg.projection, seed=s.cfg.projection_seed, fit_sample=s.cfg.projection_sample)
        _record_settings(s, "embed")


DATA: Stage[RunState] = Stage("data", _data_text, _data)
FINETUNE: Stage[RunState] = Stage("finetune", _finetune_text, _finetune)
SCORE: Stage[RunState] = Stage("score", _score_text, _score)


def _part_data(s: RunState) -> None:
    """The data stage of a part file (``--shard``, or a launcher's rank): its shard's rows, and the shard marked
    unfinished until its scores are in."""
    if s.prepared is None:  # a shard run of its own: render (or map) the data, find the checkpoints
        _data(s)
    else:  # a rank of a profile: the data and checkpoints are the profile's
        s.table = open_run(s.cfg, s.prepared)
    index, count = parse_shard(s.cfg.shard)
    s.table.set_meta({"shard": {"index": index, "count": count}, "shard_complete": False})


def _part_score(s: RunState) -> None:
    s.ids = score_checkpoints(s.table, s.cfg, s.prepared, s.checkpoints, stop_after_batches=s.stop_after_batches)
    s.table.set_meta({"shard_complete": True})


PART_DATA: Stage[RunState] = Stage("data", _data_text, _part_data)
PART_SCORE: Stage[RunState] = Stage("score", _score_text, _part_score)


def _embed_done(s: RunState) -> bool:
    return _unchanged(s, "embed") and s.table.n_unprojected() == 0


def _embed_text(s: RunState) -> str:
    if not s.cfg.embed:
        return "no embeddings asked for"
    return f"semantic map of the embeddings ({s.cfg.projection})" + (
        ": done before, nothing new scored" if _embed_done(s) else ""
    )


CONFIDENCE: Stage[RunState] = Stage(
    "confidence",
    lambda s: (
        "confidence and the median split" + (": done before, nothing new scored" if _unchanged(s, "confidence") else "")
    ),
    _confidence,
)
EMBED: Stage[RunState] = Stage("embed", _embed_text, _embed)


def _check_same_finetune(table: TableWriter, ft_cfg: FinetuneConfig, checkpoints_from: str | None) -> None:
    """A resumed profile must fine-tune (or take checkpoints) as the run it resumes did."""
    if not done_stages(table).get("finetune"):
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


def _execute(stages: list[Stage[RunState]], state: RunState) -> None:
    try:
        # Stage lines for a profile (a long, multi-stage job); `score` shows its progress bars only.
        run_stages(stages, state, progress=state.cfg.progress and state.ft is not None)
    finally:
        if state.table is not None:
            state.table.close()


# --- entry points -----------------------------------------------------------------------------------------
def run_profile(
    score_cfg: ScoreConfig,
    ft_cfg: FinetuneConfig,
    *,
    checkpoints_from: str | None = None,
    fail_after_checkpoints: int | None = None,
    command: list[str] | None = None,
) -> str:
    """Profile a dataset end to end and return the table path.

    Args:
        score_cfg: data, rendering and scoring settings (``score_cfg.model`` is the reference model).
        ft_cfg: reference fine-tuning settings.
        checkpoints_from: score a user's existing checkpoints instead of fine-tuning.
        fail_after_checkpoints: testing hook; crash right after saving that many checkpoints.
        command: the command line that started the run, recorded in ``meta`` (what resumes it).
    """
    if score_cfg.shard or score_cfg.workers != 1:
        raise SftmixError(
            "profile fine-tunes in one job; to spread the scoring, run `sftmix score --checkpoint DIR --shard i/N` "
            "(or --workers N) on its checkpoints"
        )
    check_output_table(score_cfg.out)
    ranks = launcher_ranks()
    with ranks.main_first():  # rank 0 converts the packaged model, if named, the others read it
        score_cfg = resolve_models(score_cfg)
    if score_cfg.ifd_model:
        ifd_model_info(score_cfg.ifd_model)  # a missing --ifd-model stops the run now, not after fine-tuning
    if ranks.world > 1:  # under torchrun / accelerate launch: this rank's device, rank 0's progress bars
        score_cfg = replace(
            score_cfg, device=_rank_device(score_cfg.device, ranks), progress=score_cfg.progress and ranks.main
        )
    state = RunState(
        score_cfg,
        ft_cfg,
        checkpoints_from=checkpoints_from,
        fail_after_checkpoints=fail_after_checkpoints,
        ranks=ranks,
        stop_after_batches=_rank_stop_hook(ranks),
        command=command,
    )
    _execute([DATA, FINETUNE, SCORE, CONFIDENCE, EMBED], state)
    ranks.barrier()  # rank 0 has closed the table: any rank may read it now
    return score_cfg.out


def resolve_models(cfg: ScoreConfig) -> ScoreConfig:
    """``cfg`` with the packaged model's name (``--model``, ``--ifd-model``) as its checkpoint's directory."""
    from profiler.hf import resolve_model

    ifd_model = resolve_model(cfg.ifd_model) if cfg.ifd_model else cfg.ifd_model
    return replace(cfg, model=resolve_model(cfg.model), ifd_model=ifd_model)


def _rank_stop_hook(ranks: Ranks) -> int | None:
    """Testing hook: ``SFTMIX_TEST_STOP_RANK=R:N`` makes rank R stop after N written score batches (a killed rank)."""
    spec = os.environ.get("SFTMIX_TEST_STOP_RANK")
    if ranks.world == 1 or not spec:
        return None
    rank, n = (int(x) for x in spec.split(":"))
    return n if rank == ranks.rank else None


def _rank_device(device: str, ranks: Ranks) -> str:
    """``auto`` or ``cuda`` is the rank's own GPU (``cuda:LOCAL_RANK``) when there are GPUs."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local}"
    return device


def score_table(cfg: ScoreConfig, *, stop_after_batches: int | None = None, command: list[str] | None = None) -> str:
    """One run of `sftmix score` into the whole table, in this process: score every usable example at every
    checkpoint, then the confidence and the semantic map. A re-run with the same ``out`` resumes ((example,
    checkpoint) pairs already scored are skipped). ``command``, the command line that started the run, is recorded
    in ``meta`` (what resumes it). Returns the table path.

    :func:`profiler.pipeline.executors.run_score` is the entry that picks this, a shard or a node's workers.
    """
    return _score_run(cfg, [DATA, SCORE, CONFIDENCE, EMBED], stop_after_batches, command)


def score_part(cfg: ScoreConfig, *, stop_after_batches: int | None = None, command: list[str] | None = None) -> str:
    """One shard (``cfg.shard``, ``k/N``) of `sftmix score` into its part file beside ``cfg.out``, in this process:
    that shard's rows and scores only, no confidence (`sftmix merge` joins the parts). Resumable like
    :func:`score_table`. Returns the part file's path."""
    out = str(part_path(cfg.out, *parse_shard(cfg.shard)))
    return _score_run(replace(cfg, out=out), [PART_DATA, PART_SCORE], stop_after_batches, command)


def _score_run(
    cfg: ScoreConfig, stages: list[Stage[RunState]], stop_after_batches: int | None, command: list[str] | None
) -> str:
    check_output_table(cfg.out)
    if cfg.ifd_model:
        ifd_model_info(cfg.ifd_model)  # a missing --ifd-model stops the run before any scoring
    _execute(stages, RunState(cfg, stop_after_batches=stop_after_batches, command=command))
    return cfg.out


def profile(*, checkpoints_from: str | None = None, **kwargs: Any) -> str:
    """Python entry point: ``profiler.profile(model=..., data=[...], out=..., n_checkpoints=3, lora=True)``.

    Keyword arguments are the fields of :class:`ScoreConfig` and :class:`FinetuneConfig`.
    """
    score_names = {f.name for f in dataclasses.fields(ScoreConfig)}
    ft_names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = set(kwargs) - score_names - ft_names
    if unknown:
        raise TypeError(f"unknown profile option(s): {sorted(unknown)}")
    score_cfg = ScoreConfig(**{k: v for k, v in kwargs.items() if k in score_names})
    ft_cfg = FinetuneConfig(**{k: v for k, v in kwargs.items() if k in ft_names})
    return run_profile(score_cfg, ft_cfg, checkpoints_from=checkpoints_from)
