"""The data stage: load and render the data with the reference tokenizer, open (or resume) the run's table."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from profiler import __version__
from profiler.config import ScoreConfig
from profiler.data.load import LoadedRow, load_examples, record_json
from profiler.data.render import RenderedExample, Renderer
from profiler.errors import DataError
from profiler.hf import load_tokenizer
from profiler.scoring.base import ScoreItem
from profiler.table.writer import TableWriter


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

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

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
    except BaseException:
        table.close()
        raise
    return table
