"""`sftmix score`: data -> render -> score every checkpoint -> confidence -> table, resumable.

The pieces (:func:`prepare_data`, :func:`open_run`, :func:`score_checkpoints`, :func:`finish_confidence`)
are shared with `sftmix profile`, which adds fine-tuning in front.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from profiler import __version__
from profiler.checkpoints import discover_checkpoints
from profiler.confidence import compute_confidence
from profiler.config import ScoreConfig
from profiler.data.load import LoadedRow, load_examples, record_json
from profiler.data.render import RenderedExample, Renderer
from profiler.embed import project_table
from profiler.errors import DataError, SftmixError
from profiler.models import load_causal_lm, load_tokenizer, resolve_device, resolve_dtype
from profiler.scoring.base import ScoreItem
from profiler.scoring.torch_backend import TorchScorer
from profiler.shards import in_shard, parse_shard, part_path
from profiler.table.writer import CheckpointInfo, TableWriter

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Loaded and rendered data for one tokenizer."""

    tokenizer: Any
    renderer: Renderer
    rows: list[LoadedRow]
    rendered: dict[str, RenderedExample]

    def settings(self, cfg: ScoreConfig) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {
            "tokenizer": str(cfg.model),
            "template": self.renderer.template,
            "max_length": cfg.max_length,
            "truncate": cfg.truncate,
            "format": cfg.format,
            "fields": cfg.fields,
        }

    def ok_items(self) -> list[ScoreItem]:
        return [
            ScoreItem(r.example_id, self.rendered[r.example_id].input_ids, self.rendered[r.example_id].response_mask)
            for r in self.rows
            if r.status == "ok"
        ]


def render_rows(rows: list[LoadedRow], renderer: Renderer, on_error: str) -> dict[str, RenderedExample]:
    """Render every usable row; a row that fails gets its reason in ``status`` (or raises)."""
    rendered = {}
    for r in rows:
        if r.example is None:
            continue
        try:
            rendered[r.example_id] = renderer.render(r.example, source_file=r.source_file, row=r.file_row)
        except DataError as e:
            if on_error == "raise":
                raise
            r.status, r.status_detail = e.code, e.describe()
    return rendered


def prepare_data(cfg: ScoreConfig) -> Prepared:
    """Load, normalize and render the data with the reference model's tokenizer."""
    tokenizer = load_tokenizer(cfg.model)
    renderer = Renderer(tokenizer, cfg.template, cfg.max_length, cfg.truncate)
    rows = load_examples(cfg.data, fmt=cfg.format, fields=cfg.fields, on_error=cfg.on_error, split=cfg.split)
    return Prepared(tokenizer, renderer, rows, render_rows(rows, renderer, cfg.on_error))


def example_records(rows: list[LoadedRow], rendered: dict[str, RenderedExample]) -> list[dict]:
    """Rows of the ``examples`` table."""
    out = []
    for r in rows:
        rx = rendered.get(r.example_id) if r.status == "ok" else None
        out.append(
            {
                "example_id": r.example_id,
                "row_index": r.row_index,
                "source": r.source,
                "source_file": r.source_file,
                "file_row": r.file_row,
                "messages": json.dumps(r.example.messages, ensure_ascii=False) if r.example else None,
                "prompt": r.example.prompt_text if r.example else None,
                "response": r.example.response_text if r.example else None,
                "record": record_json(r),
                "n_prompt_tokens": rx.n_prompt_tokens if rx else None,
                "n_response_tokens": rx.n_response_tokens if rx else None,
                "status": r.status,
                "status_detail": r.status_detail,
                "truncated": bool(rx and rx.truncated),
            }
        )
    return out


def fingerprint(rows: list[LoadedRow]) -> str:
    """Identifies the dataset: every row's id, source and status, in order."""
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r.example_id}\t{r.source}\t{r.status}\n".encode())
    return h.hexdigest()[:16]


def open_run(cfg: ScoreConfig, prepared: Prepared) -> TableWriter:
    """Open (or create) the table and record the examples and settings; refuses a table of another run."""
    table = TableWriter(cfg.out)
    try:
        table.init_examples(
            example_records(prepared.rows, prepared.rendered), fingerprint(prepared.rows), prepared.settings(cfg)
        )
        table.set_meta(
            {
                "sftmix_version": __version__,
                "reference_model": str(cfg.model),
                "template": prepared.renderer.template,
                "score_config": asdict(cfg),
            }
        )
    except Exception:
        table.close()
        raise
    return table


def _scorer(model, cfg: ScoreConfig, prepared: Prepared) -> TorchScorer:
    return TorchScorer(
        model,
        max_tokens=cfg.max_tokens,
        max_batch_size=cfg.max_batch_size,
        pad_token_id=prepared.tokenizer.pad_token_id or 0,
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
    """Score every usable example at each checkpoint, skipping pairs already in the table.

    Adapter checkpoints are applied in turn to one loaded base model instead of reloading it.

    Args:
        on_scored: called with each checkpoint once all its scores are written (e.g. to delete its weights).
        stop_after_batches: testing hook; raise after this many written batches to simulate a crash.

    Returns:
        The checkpoint ids, in order.
    """
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    ckpt_ids = table.register_checkpoints(checkpoints)
    items = prepared.ok_items()
    shard = parse_shard(cfg.shard)
    if shard:
        items = [it for it in items if in_shard(it.example_id, *shard)]
    backend = "torch" if cfg.ray else resolve_backend(cfg.backend, device)
    vllm_pool = _VllmPool(cfg, dtype, items, checkpoints) if backend == "vllm" else None
    base = None
    written = 0
    try:
        for i, (info, cid) in enumerate(zip(checkpoints, ckpt_ids)):
            embed = cfg.embed and i == len(checkpoints) - 1  # embeddings come from the last checkpoint's pass
            done = table.scored_ids(cid)
            if embed:
                done &= table.embedded_ids()
                table.set_meta({"embedding_checkpoint": cid})
            todo = [it for it in items if it.example_id not in done]
            if todo:
                desc = f"scoring checkpoint {cid + 1}/{len(ckpt_ids)}"
                if cfg.ray:
                    from profiler.ray_scoring import ray_batches

                    batches = ray_batches(
                        cfg.ray,
                        info,
                        todo,
                        base=cfg.model,
                        dtype=cfg.dtype,
                        max_tokens=cfg.max_tokens,
                        pad_token_id=prepared.tokenizer.pad_token_id or 0,
                        embed=embed,
                    )

                    def release():
                        return None

                elif backend == "vllm" and not embed:
                    batches, release = vllm_pool.batches(info, todo, desc)
                else:  # the torch backend (also the pass that embeds, which vLLM cannot)
                    if info.kind == "adapter":
                        from peft import PeftModel

                        base = base or load_causal_lm(cfg.model, device=device, dtype=dtype)
                        model = PeftModel.from_pretrained(base, info.path).eval()
                    else:
                        model = load_causal_lm(info.path, device=device, dtype=dtype, base=cfg.model)
                    batches = _scorer(model, cfg, prepared).score(todo, progress=cfg.progress, desc=desc, embed=embed)
                    holder = {"model": model, "kind": info.kind}
                    del model

                    def release(holder=holder):
                        nonlocal base
                        model = holder.pop("model")
                        if holder["kind"] == "adapter":
                            base = model.unload()  # removes the LoRA layers, leaving the base model as loaded
                        del model
                        gc.collect()

                try:
                    for batch_scores in batches:
                        table.write_scores(cid, batch_scores)
                        written += 1
                        if stop_after_batches is not None and written >= stop_after_batches:
                            raise RuntimeError("stopped by stop_after_batches (test hook)")
                finally:
                    batches.close()  # the generator's frame holds the model: let it go before releasing
                    del batches
                    release()
            else:
                log.info("checkpoint %s: all %d examples already scored", info.path, len(items))
            if on_scored is not None:
                on_scored(info)
    finally:
        if vllm_pool is not None:
            vllm_pool.close()
    return ckpt_ids


def resolve_backend(backend: str, device) -> str:
    """``auto``: vLLM when it is installed and the device is a GPU, else torch. ``vllm`` must be installed."""
    from profiler.scoring.vllm_backend import INSTALL_HINT, vllm_available

    if backend == "torch":
        return "torch"
    if backend == "vllm":
        if not vllm_available():
            raise SftmixError(INSTALL_HINT)
        return "vllm"
    return "vllm" if device.type == "cuda" and vllm_available() else "torch"


class _VllmPool:
    """vLLM engines for a run: one for the base model with LoRA enabled (every adapter checkpoint is served on
    it), and one per full checkpoint, freed once that checkpoint is scored."""

    def __init__(self, cfg: ScoreConfig, dtype, items: Sequence[ScoreItem], checkpoints: Sequence[CheckpointInfo]):
        import torch

        from profiler.scoring.vllm_backend import lora_rank

        gc.collect()  # vLLM sizes its cache from free GPU memory: hand back what fine-tuning left cached
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.cfg = cfg
        self.dtype = str(dtype).replace("torch.", "")
        self.max_len = max((len(it.input_ids) for it in items), default=1) + 1
        ranks = [lora_rank(c.path) for c in checkpoints if c.kind == "adapter"]
        self.max_rank = max(ranks) if ranks else None
        self.base_engine = None

    def _engine(self, model: str, lora: bool):
        from profiler.scoring.vllm_backend import VllmScorer

        cfg = self.cfg
        return VllmScorer(
            model,
            dtype=self.dtype,
            max_num_batched_tokens=cfg.max_tokens,
            max_model_len=self.max_len,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            max_lora_rank=self.max_rank if lora else None,
        )

    def batches(self, info: CheckpointInfo, todo: Sequence[ScoreItem], desc: str):
        """Score batches for one checkpoint, and what to call once they are written."""
        if info.kind == "adapter":
            if self.base_engine is None:
                self.base_engine = self._engine(self.cfg.model, lora=True)
            return self.base_engine.score(todo, progress=self.cfg.progress, desc=desc, adapter=info.path), lambda: None
        engine = self._engine(info.path, lora=False)
        return engine.score(todo, progress=self.cfg.progress, desc=desc), engine.close

    def close(self) -> None:
        if self.base_engine is not None:
            self.base_engine.close()
            self.base_engine = None


def finish_confidence(table: TableWriter, ckpt_ids: Sequence[int], n_bins: int) -> None:
    table.write_confidence(compute_confidence(table.scores_frame(), ckpt_ids, n_bins))


def finish_projection(table: TableWriter, cfg: ScoreConfig) -> None:
    """The embeddings' 2-D map (UMAP or PCA), when embeddings were stored."""
    if cfg.embed:
        project_table(table, method=cfg.projection, seed=cfg.projection_seed, fit_sample=cfg.projection_sample)


def run_score(cfg: ScoreConfig, *, stop_after_batches: int | None = None) -> str:
    """Score every usable example at every checkpoint and write the confidence table.

    Re-running with the same ``out`` resumes: (example, checkpoint) pairs already scored are skipped. With
    ``cfg.shard`` only that slice is scored, into a part file (no confidence until `sftmix merge`); with
    ``cfg.workers`` other than 1, one worker process per shard runs on this node and the parts are merged.

    Returns:
        The table (or part file) path.
    """
    if cfg.workers != 1:
        return run_workers(cfg)
    shard = parse_shard(cfg.shard)
    prepared = prepare_data(cfg)
    checkpoints = discover_checkpoints(cfg.model, cfg.checkpoints)
    out = str(part_path(cfg.out, *shard)) if shard else cfg.out
    with open_run(replace(cfg, out=out), prepared) as table:
        if shard:
            table.set_meta({"shard": {"index": shard[0], "count": shard[1]}, "shard_complete": False})
        ids = score_checkpoints(table, cfg, prepared, checkpoints, stop_after_batches=stop_after_batches)
        if shard:
            table.set_meta({"shard_complete": True})
            return out
        finish_confidence(table, ids, cfg.n_bins)
        finish_projection(table, cfg)
    return out


def run_workers(cfg: ScoreConfig) -> str:
    """One scoring process per shard on this node (worker k on GPU k), then the parts merged into ``cfg.out``."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import torch

    from profiler.shards import merge_parts

    n_gpus = torch.cuda.device_count()
    on_gpu = cfg.device in ("auto", "cuda") and n_gpus > 0
    n = cfg.workers or n_gpus
    if n < 1:
        raise SftmixError("--workers 0 means one worker per GPU, and no GPU is visible; give a number")
    threads = 0 if on_gpu else max(1, (os.cpu_count() or 1) // n)
    procs = []
    with tempfile.TemporaryDirectory(prefix="sftmix-workers-") as tmp:
        for k in range(n):
            device = f"cuda:{k % n_gpus}" if on_gpu else cfg.device
            wcfg = replace(cfg, shard=f"{k}/{n}", workers=1, device=device, progress=cfg.progress and k == 0)
            spec = Path(tmp) / f"worker-{k}.json"
            spec.write_text(json.dumps(asdict(wcfg)), encoding="utf-8")
            procs.append(subprocess.Popen([sys.executable, "-m", "profiler.worker", str(spec), str(threads)]))
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
