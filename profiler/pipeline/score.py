"""The per-checkpoint score loop: the same for every backend, resumable pair by pair.

At each checkpoint it scores the examples not yet scored there; the last checkpoint's pass also embeds
(``--embed``) and, by default, keeps each response token's NLL (``--token-scores last``; ``all``: at every
checkpoint) with the tokens' text. IFD (:mod:`profiler.ifd`) is part of the same stage: the responses alone are
scored on the last checkpoint's loaded model, before its weights may be deleted (``--keep-checkpoints``), or on
``--ifd-model`` once the checkpoints are done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

from profiler.config import ScoreConfig
from profiler.data.items import keep_items
from profiler.data.tokens import start_tokens, token_texts
from profiler.errors import ModelError
from profiler.ifd import alone_items, ifd_rows
from profiler.pipeline.prepare import Prepared
from profiler.scoring.backends import make_backend
from profiler.scoring.base import BackendSettings, CheckpointScorer, ExampleScore, ScoreItem
from profiler.table.writer import CheckpointInfo, TableWriter

log = logging.getLogger(__name__)

# Scores reach the table in groups of this many examples, or after this many seconds: a DuckDB transaction costs
# ~10 ms beyond its rows, so one per scorer batch (~30 Tulu-like examples at 16k tokens) would spend most of a
# million-example run committing. A killed run loses at most one group, scored again on resume; an exception or
# Ctrl-C writes the group first.
WRITE_EXAMPLES = 4096
WRITE_SECONDS = 20.0


def keeps_token_scores(mode: str, index: int, n_checkpoints: int) -> bool:
    """Whether checkpoint ``index`` (0-based, of ``n_checkpoints``) stores token NLLs under ``--token-scores``."""
    return mode == "all" or (mode == "last" and index == n_checkpoints - 1)


def ifd_model_info(path: str) -> CheckpointInfo:
    """``--ifd-model`` as a checkpoint to open: a local directory (resolved; an adapter or a model) or a hub name.

    Raises:
        ModelError: a local path (absolute, relative with ``./``, or not of the form ``org/name``) that does not
            exist; cheap, so a run calls it before any work (a profile would otherwise fine-tune first).
    """
    from profiler.hf import is_adapter_dir

    p = Path(path)
    if p.exists():
        return CheckpointInfo(str(p.resolve()), None, None, "adapter" if is_adapter_dir(p) else "model")
    if p.is_absolute() or path.startswith(".") or path.count("/") != 1:
        raise ModelError(f"--ifd-model {path}: no such model directory (nor a hub name of the form org/name)")
    return CheckpointInfo(path, None, None, "model")


class _Progress:
    """Counts scored batches; the ``stop_after_batches`` test hook raises after that many (a simulated crash)."""

    def __init__(self, stop_after: int | None):
        self.written = 0
        self.stop_after = stop_after

    def wrote(self) -> None:
        self.written += 1
        if self.stop_after is not None and self.written >= self.stop_after:
            raise RuntimeError("stopped by stop_after_batches (test hook)")


class WriteGroup:
    """Rows handed to ``write`` in groups (:data:`WRITE_EXAMPLES`, :data:`WRITE_SECONDS`); ``flush`` writes the
    rest. Rows leave the group before ``write`` runs, so a failed write is not tried twice."""

    def __init__(self, write: Callable[[list], None]):
        self.write = write
        self.rows: list = []
        self.since = time.monotonic()

    def add(self, rows: Sequence) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= WRITE_EXAMPLES or time.monotonic() - self.since >= WRITE_SECONDS:
            self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        self.since = time.monotonic()
        if rows:
            self.write(rows)


def _score_pass(
    table: TableWriter,
    scorer: CheckpointScorer,
    cid: int,
    todo: list[ScoreItem],
    *,
    desc: str,
    texts: Callable[[list[ExampleScore]], dict[str, list[str]]] | None,
    progress: _Progress,
) -> None:
    """Score ``todo`` at checkpoint ``cid``, writing in groups of batches; ``texts`` (when token scores are kept)
    gives the token texts of a group's examples that have none stored yet."""
    if not todo:
        return
    group = WriteGroup(lambda rows: table.write_scores(cid, rows, texts(rows) if texts is not None else None))
    try:
        with closing(scorer.score(todo, desc, tokens=texts is not None)) as batches:
            for batch in batches:
                group.add(batch)
                progress.wrote()
    finally:
        group.flush()


def _ifd_pass(
    table: TableWriter,
    scorer: CheckpointScorer,
    alone: list[ScoreItem],
    conditional: dict[str, float],
    *,
    cid: int | None,
    model: str,
    progress: _Progress,
) -> None:
    """Score the responses ``alone`` and write their IFD with ``model`` (at checkpoint ``cid``, or None), given
    each example's mean NLL with its prompt (``conditional``, by example id)."""
    group = WriteGroup(lambda rows: table.write_ifd(cid, model, rows))
    try:
        with closing(scorer.score(alone, "IFD: responses alone", embed=False)) as batches:
            for batch in batches:
                group.add(ifd_rows(batch, conditional))
                progress.wrote()
    finally:
        group.flush()


def _mean_nlls(scorer: CheckpointScorer, items: list[ScoreItem], wanted: list[ScoreItem]) -> dict[str, float]:
    """The mean response NLL of the ``items`` that ``wanted`` names, scored with their prompts on ``scorer``."""
    ids = set(wanted.ids) if hasattr(wanted, "ids") else {w.example_id for w in wanted}
    todo = keep_items(items, ids.__contains__)
    with closing(scorer.score(todo, "IFD: with prompts", embed=False)) as batches:
        return {s.example_id: s.mean_nll for batch in batches for s in batch}


def _pending(table: TableWriter, items: list[ScoreItem], cid: int, *, embed: bool, tokens: bool) -> list[ScoreItem]:
    """The items checkpoint ``cid`` still has to score: no score yet, or no embedding or token NLLs it should
    keep (asked for on a resumed run, say)."""
    done = table.scored_ids(cid)
    if embed:
        done &= table.embedded_ids()
    if tokens:
        done &= table.token_scored_ids(cid)
    return keep_items(items, lambda eid: eid not in done)


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

    The last checkpoint's pass also embeds each example when ``cfg.embed``; the checkpoints ``cfg.token_scores``
    names keep per-token NLLs (and the token texts, once per example); ``cfg.ifd`` adds each example's IFD, on
    the last checkpoint's loaded model or on ``cfg.ifd_model`` after the checkpoints.

    Args:
        on_scored: called with each checkpoint once all its scores are written (e.g. to delete its weights).
        stop_after_batches: testing hook; raise after this many scored batches to simulate a crash.

    Returns:
        The checkpoint ids, in order.
    """
    ids = table.register_checkpoints(checkpoints)
    items = prepared.ok_items()  # this shard's, under --shard
    alone = alone_items(items, start_tokens(prepared.tokenizer)) if cfg.ifd else []
    ifd_info = ifd_model_info(cfg.ifd_model) if cfg.ifd and cfg.ifd_model else None
    opened = list(checkpoints) + ([ifd_info] if ifd_info else [])
    settings = BackendSettings.of(cfg, pad_token_id=prepared.pad_token_id)
    backend = make_backend(cfg.backend, settings, opened, items)
    progress = _Progress(stop_after_batches)
    texts = _texts_of(prepared, table.tokenized_ids())
    try:
        for i, (info, cid) in enumerate(zip(checkpoints, ids)):
            last = i == len(checkpoints) - 1
            embed = cfg.embed and last  # embeddings come from the last checkpoint's pass
            if embed:
                table.set_meta({"embedding_checkpoint": cid})
            keep_tokens = keeps_token_scores(cfg.token_scores, i, len(checkpoints))
            todo = _pending(table, items, cid, embed=embed, tokens=keep_tokens)
            ifd_todo = _ifd_todo(table, alone, info.path) if last and ifd_info is None else []
            if (todo or ifd_todo) and _only_extras_of_deleted(table, info, cid, todo):
                todo, ifd_todo = [], []
            if todo or ifd_todo:
                with backend.open_checkpoint(info, embed=embed) as scorer:
                    desc = f"scoring checkpoint {cid + 1}/{len(ids)}"
                    tokens = texts if keep_tokens else None
                    _score_pass(table, scorer, cid, todo, desc=desc, texts=tokens, progress=progress)
                    if ifd_todo:  # the same loaded model, before on_scored may delete its weights
                        conditional = table.mean_nlls(cid)
                        _ifd_pass(table, scorer, ifd_todo, conditional, cid=cid, model=info.path, progress=progress)
            else:
                log.info("checkpoint %s: all %d examples already scored", info.path, len(items))
            if on_scored is not None:
                on_scored(info)
        ifd_todo = _ifd_todo(table, alone, ifd_info.path) if ifd_info is not None else []
        if ifd_todo:
            with backend.open_checkpoint(ifd_info, embed=False) as scorer:
                conditional = _mean_nlls(scorer, items, ifd_todo)
                _ifd_pass(table, scorer, ifd_todo, conditional, cid=None, model=ifd_info.path, progress=progress)
    finally:
        backend.close()
    return ids


def _only_extras_of_deleted(table: TableWriter, info: CheckpointInfo, cid: int, todo: list[ScoreItem]) -> bool:
    """Whether a checkpoint whose weights were deleted once scored (``--keep-checkpoints``) has every score, so
    what is left to do are extras a re-run asked for (token scores, embeddings or IFD it did not keep): skipped,
    with a warning, as they cannot be computed any more."""
    path = Path(info.path)
    if not path.is_absolute() or path.exists():
        return False
    scored = table.scored_ids(cid)
    if any(it.example_id not in scored for it in todo):
        return False  # scores are missing: loading the checkpoint says what is wrong
    log.warning("checkpoint %s was deleted after scoring; its missing token scores or IFD are not added", info.path)
    return True


def _ifd_todo(table: TableWriter, alone: list[ScoreItem], model: str) -> list[ScoreItem]:
    """The responses alone whose IFD with ``model`` is not in the table yet."""
    done = table.ifd_ids(model)
    return keep_items(alone, lambda eid: eid not in done)


def _texts_of(prepared: Prepared, stored: set[str]) -> Callable[[list[ExampleScore]], dict[str, list[str]]]:
    """A function giving the token texts of a batch's examples that have none yet (``stored``: those in the
    table), each decoded once per run: the batch's write stores them, or the run stops."""
    given = set(stored)

    def texts(batch: list[ExampleScore]) -> dict[str, list[str]]:
        out = {}
        for s in batch:
            if s.example_id not in given:
                r = prepared.item(s.example_id)
                out[s.example_id] = token_texts(prepared.tokenizer, r.input_ids, r.response_mask)
        given.update(out)
        return out

    return texts
