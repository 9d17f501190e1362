"""The data stage: render the data once with the reference tokenizer (or map the cache), open (or resume) the table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from profiler import __version__
from profiler.config import ScoreConfig, parse_shard
from profiler.data.cache import RenderedData, default_cache_root, render_dataset
from profiler.data.items import RenderedItems
from profiler.data.load import parse_source_spec
from profiler.data.render import Renderer
from profiler.hf import load_tokenizer
from profiler.scoring.base import ScoreItem
from profiler.table.writer import EXAMPLE_COLUMNS, TableWriter


@dataclass
class Prepared:
    """The rendered data of a run, memory-mapped, and the rows this process works on (a shard's, or all)."""

    tokenizer: Any
    renderer: Renderer
    data: RenderedData
    rows: np.ndarray
    _items: RenderedItems | None = field(default=None, repr=False)
    _positions: dict[str, int] | None = field(default=None, repr=False)

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

    def ok_items(self) -> RenderedItems:
        """The scored rows' items (this process's rows), read from the cache on access."""
        if self._items is None:
            ok = self.data.rows_where(ok=True)
            self._items = self.data.items(np.intersect1d(ok, self.rows))
        return self._items

    def for_shard(self, spec: str) -> Prepared:
        """The same data, with this process working on shard ``spec`` (``i/N``) of its rows."""
        rows = np.intersect1d(self.rows, _shard_rows(self.data, spec))
        return Prepared(self.tokenizer, self.renderer, self.data, rows)

    def item(self, example_id: str) -> ScoreItem:
        """One scored example by id."""
        if self._positions is None:
            self._positions = {eid: i for i, eid in enumerate(self.ok_items().ids)}
        return self.ok_items()[self._positions[example_id]]


def _shard_rows(data: RenderedData, spec: str | None) -> np.ndarray:
    from profiler.pipeline.shards import in_shard

    shard = parse_shard(spec)
    if shard is None:
        return data.rows_where()
    ids = data.column("example_id")
    return data.rows_where(np.fromiter((in_shard(e, *shard) for e in ids), dtype=bool, count=len(ids)))


def prepare_data(cfg: ScoreConfig) -> Prepared:
    """Render the data with the reference model's tokenizer, or map the cache a run of the same data made.

    Raises:
        DataError: with ``on_error="raise"``, the first row (in input order) that cannot be scored.
    """
    tokenizer = load_tokenizer(cfg.model)
    renderer = Renderer(tokenizer, cfg.template, cfg.max_length, cfg.truncate)
    data = render_dataset(
        [parse_source_spec(s) for s in cfg.data],
        renderer,
        cfg.cache_dir or default_cache_root(cfg.out),
        fmt=cfg.format,
        fields=cfg.fields,
        split=cfg.split,
        num_proc=cfg.num_proc,
        progress=cfg.progress,
    )
    if cfg.on_error == "raise" and (error := data.first_error()) is not None:
        raise error
    return Prepared(tokenizer, renderer, data, _shard_rows(data, cfg.shard))


def open_run(cfg: ScoreConfig, prepared: Prepared) -> TableWriter:
    """Open (or create) the table and record its examples (this shard's, under ``--shard``) and settings; refuses
    a table of another run."""
    table = TableWriter(cfg.out)
    try:
        data = prepared.data
        table.init_examples(
            data.example_batches(prepared.rows, list(EXAMPLE_COLUMNS)),
            data.fingerprint,
            prepared.settings(cfg),
        )
        table.set_meta(
            {
                "sftmix_version": __version__,
                "reference_model": str(cfg.model),
                "template": prepared.renderer.template,
                "score_config": asdict(cfg),
                "dataset_rows": data.n_rows,
                "data_cache": str(data.path),
            }
        )
    except BaseException:
        table.close()
        raise
    return table
