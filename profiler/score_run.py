"""`sftmix score`: data -> render -> score every checkpoint -> confidence -> table, resumable."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field

from profiler import __version__
from profiler.checkpoints import discover_checkpoints
from profiler.confidence import compute_confidence
from profiler.data.load import LoadedRow, load_examples, record_json
from profiler.data.render import TEMPLATES, RenderedExample, Renderer
from profiler.errors import DataError
from profiler.models import load_causal_lm, load_tokenizer, resolve_device, resolve_dtype
from profiler.scoring.base import ScoreItem
from profiler.scoring.torch_backend import TorchScorer
from profiler.table.writer import TableWriter

log = logging.getLogger(__name__)


@dataclass
class ScoreConfig:
    """Settings of a scoring run. Every field is recorded in the table's ``meta``."""

    model: str = field(metadata={"help": "reference model (directory or hub name); base model of adapter checkpoints"})
    data: list[str] = field(metadata={"help": "data files/directories/hub names, optionally as NAME=PATH"})
    out: str = field(metadata={"help": "the DuckDB confidence table to write (resumed when it exists)"})
    checkpoints: list[str] = field(
        default_factory=list,
        metadata={
            "help": "checkpoint directories to score (a Trainer output dir means all its checkpoint-N); "
            "none: score the model itself"
        },
    )
    format: str = field(default="auto", metadata={"help": "auto, alpaca, prompt_completion, chat or sharegpt"})
    fields: dict[str, str] = field(default_factory=dict, metadata={"help": "field-name overrides, e.g. output=answer"})
    split: str = field(default="train", metadata={"help": "split of a multi-split dataset"})
    template: str = field(default="auto", metadata={"help": "auto (chat template if any), chat or alpaca"})
    max_length: int = field(default=2048, metadata={"help": "longest example in tokens"})
    truncate: bool = field(default=False, metadata={"help": "truncate longer examples instead of rejecting them"})
    on_error: str = field(default="raise", metadata={"help": "raise, or skip (bad rows kept with their reason)"})
    backend: str = field(default="torch", metadata={"help": "scoring backend"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, ..."})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16"})
    max_tokens: int = field(default=16384, metadata={"help": "padded tokens per scoring batch"})
    max_batch_size: int | None = field(default=None, metadata={"help": "optional cap on rows per batch"})
    n_bins: int = field(default=10, metadata={"help": "quantile bins of confidence"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("at least one data source is needed")
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.backend != "torch":
            raise ValueError(f"unknown backend {self.backend!r}; available: torch")
        if self.max_length < 2 or self.max_tokens < 1:
            raise ValueError("max_length must be >= 2 and max_tokens >= 1")


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


def run_score(cfg: ScoreConfig, *, stop_after_batches: int | None = None) -> str:
    """Score every usable example at every checkpoint and write the confidence table.

    Re-running with the same ``out`` resumes: (example, checkpoint) pairs already scored are skipped.

    Args:
        cfg: the run settings.
        stop_after_batches: testing hook; raise after this many written batches to simulate a crash.

    Returns:
        The table path.
    """
    tokenizer = load_tokenizer(cfg.model)
    renderer = Renderer(tokenizer, cfg.template, cfg.max_length, cfg.truncate)
    rows = load_examples(cfg.data, fmt=cfg.format, fields=cfg.fields, on_error=cfg.on_error, split=cfg.split)
    rendered = render_rows(rows, renderer, cfg.on_error)
    checkpoints = discover_checkpoints(cfg.model, cfg.checkpoints)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    settings = {
        "tokenizer": str(cfg.model),
        "template": renderer.template,
        "max_length": cfg.max_length,
        "truncate": cfg.truncate,
        "format": cfg.format,
        "fields": cfg.fields,
    }

    with TableWriter(cfg.out) as table:
        table.init_examples(example_records(rows, rendered), fingerprint(rows), settings)
        table.set_meta(
            {
                "sftmix_version": __version__,
                "reference_model": str(cfg.model),
                "template": renderer.template,
                "score_config": asdict(cfg),
            }
        )
        ckpt_ids = table.register_checkpoints(checkpoints)
        ok_ids = table.ok_example_ids()
        written = 0
        for info, cid in zip(checkpoints, ckpt_ids):
            done = table.scored_ids(cid)
            todo = [ScoreItem(i, rendered[i].input_ids, rendered[i].response_mask) for i in ok_ids if i not in done]
            if not todo:
                log.info("checkpoint %s: all %d examples already scored", info.path, len(ok_ids))
                continue
            model = load_causal_lm(info.path, device=device, dtype=dtype, base=cfg.model)
            scorer = TorchScorer(
                model,
                max_tokens=cfg.max_tokens,
                max_batch_size=cfg.max_batch_size,
                pad_token_id=tokenizer.pad_token_id or 0,
            )
            desc = f"checkpoint {cid + 1}/{len(ckpt_ids)}"
            for batch_scores in scorer.score(todo, progress=cfg.progress, desc=desc):
                table.write_scores(cid, batch_scores)
                written += 1
                if stop_after_batches is not None and written >= stop_after_batches:
                    raise RuntimeError("stopped by stop_after_batches (test hook)")
            del model, scorer
            gc.collect()
        table.write_confidence(compute_confidence(table.scores_frame(), ckpt_ids, cfg.n_bins))
    return cfg.out
