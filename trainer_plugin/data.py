"""Training data from a profile: examples with their split, re-rendered with the target's tokenizer.

The reference and the target may tokenize differently (weak-to-strong), so only the messages and the
split travel; token ids are made here. A user's own dataset can replace the profile's copy of the data:
it is joined by example id (a hash of the content), so it must hold the same examples.

The rendering is a 🤗 ``datasets`` Arrow cache (int32 ``input_ids`` and ``labels``, a ``confident`` flag), built
once by a batched map over processes and memory-mapped after: by every rank of a distributed run (the main
process builds it, :func:`trainer_plugin.train.prepare_data`), and by the next run of the same profile, target
tokenizer and settings. It lives beside the profile (``run_data/``, as the profiler's own cache) unless
``cache_dir`` says otherwise. Where the target tokenizes as the reference did, the rows come from the profiler's
own rendering instead (:func:`profile_render`): no tokenizer call at all.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from profiler import open_table
from profiler.data import Renderer, load_examples
from profiler.data.arrow import arrow_batch
from profiler.data.cache import (
    CACHE_FORMAT,
    TAKE_SPAN,
    RenderedData,
    build_once,
    default_cache_root,
    map_arrow,
    open_files,
    read_manifest,
    render_key,
    source_digest,
    take_rows,
    tokenizer_digest,
)
from profiler.data.ids import content_hash
from profiler.data.load import parse_source_spec
from profiler.data.render import RenderFailure, pad_batch
from profiler.errors import SftmixError
from profiler.table.schema import CONFIDENT

log = logging.getLogger(__name__)

RAW_SCHEMA = pa.schema([("example_id", pa.string()), ("messages", pa.string()), ("split", pa.string())])


class ProfileMismatch(SftmixError):
    """The training data and the profile do not describe the same examples."""


@dataclass
class TrainingSet:
    """The rendered training examples (a memory-mapped ``datasets.Dataset`` with ``example_id``, ``input_ids``,
    ``labels``, ``confident``, ``truncated``) and what happened to the profile's examples."""

    dataset: object
    n_profile: int
    n_dropped: int
    n_truncated: int
    path: Path | None = None


def _features():
    from datasets import Features, List, Value

    return Features(
        {
            "example_id": Value("string"),
            "input_ids": List(Value("int32")),
            "labels": List(Value("int32")),
            "confident": Value("bool"),
            "truncated": Value("bool"),
        }
    )


@functools.cache
def _schema() -> pa.Schema:
    return _features().arrow_schema


def render_training_batch(batch: dict[str, list], *, renderer: Renderer) -> pa.Table:
    """The map function: each example rendered for the target, or dropped when no response token is left."""
    outs = renderer.render_many([json.loads(m) for m in batch["messages"]])
    keep = [i for i, o in enumerate(outs) if not isinstance(o, RenderFailure)]
    labels = []
    for i in keep:
        lab = np.where(outs[i].response_mask, outs[i].input_ids, -100).astype(np.int32)
        lab[0] = -100  # the first token has nothing to predict it
        labels.append(lab)
    columns = {
        "example_id": [batch["example_id"][i] for i in keep],
        "input_ids": [outs[i].input_ids for i in keep],
        "labels": labels,
        "confident": [batch["split"][i] == CONFIDENT for i in keep],
        "truncated": [outs[i].truncated for i in keep],
    }
    return arrow_batch(columns, _schema())


def _profile_splits(profile: str) -> tuple[dict[str, str], str]:
    with open_table(profile) as t:
        frame = t.confidence.select("example_id", "split")
        digest = t.split_digest()
    if frame.is_empty():
        raise ProfileMismatch(f"{profile} has no confidence split yet; finish `sftmix profile` (or score) first")
    return dict(frame.iter_rows()), digest


def _write_profile_rows(profile: str, path: Path) -> int:
    """The profile's split examples into the Arrow file the map reads, streamed from the table."""
    n = 0
    with open_table(profile) as t, pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, RAW_SCHEMA) as w:
        for batch in t.split_batches():
            w.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=RAW_SCHEMA))
            n += batch.num_rows
    return n


def _write_data_rows(profile: str, data: Sequence[str], splits: dict[str, str], path: Path) -> int:
    """The user's ``data`` joined to the profile's splits by example id, into the Arrow file the map reads."""
    loaded = load_examples(list(data), on_error="raise")
    unknown = [r for r in loaded if r.example_id not in splits]
    if unknown:
        first = unknown[0]
        raise ProfileMismatch(
            f"{len(unknown)} of {len(loaded)} training examples are not in the profile {profile} "
            f"(first: {first.source_file}, row {first.file_row}); profile this dataset first"
        )
    cols = {
        "example_id": [r.example_id for r in loaded],
        "messages": [json.dumps(r.example.messages, ensure_ascii=False) for r in loaded],
        "split": [splits[r.example_id] for r in loaded],
    }
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, RAW_SCHEMA) as w:
        w.write_table(pa.table(cols, schema=RAW_SCHEMA))
    return len(loaded)


def profile_render(profile: str, renderer: Renderer) -> RenderedData | None:
    """The profiler's rendering of ``profile``'s data, where it is what ``renderer`` would make: the profile's
    data files are still there and unchanged, and the render key computed with ``renderer``'s tokenizer, template
    and ``max_length`` (and the profile's ``truncate``) names a finished cache whose fingerprint is the table's.
    None otherwise (another tokenizer or setting, a hub dataset, a moved file or a removed cache)."""
    with open_table(profile) as t:
        meta = t.meta
    cfg, cache, fingerprint = meta.get("score_config") or {}, meta.get("data_cache"), meta.get("dataset_fingerprint")
    if not cfg.get("data") or not cache or not fingerprint:
        return None
    sources = [parse_source_spec(s) for s in cfg["data"]]
    if not all(Path(path).exists() for _, path in sources):  # moved, or a hub name: render for the target
        return None
    same = Renderer(renderer.tokenizer, renderer.template, renderer.max_length, truncate=bool(cfg.get("truncate")))
    key = render_key(
        sources, same, fmt=cfg.get("format", "auto"), fields=cfg.get("fields"), split=cfg.get("split", "train")
    )
    for folder in (Path(cache), default_cache_root(profile) / Path(cache).name):
        manifest = read_manifest(folder, key) if folder.name == key else None
        if manifest is not None and manifest.get("fingerprint") == fingerprint:
            return RenderedData(folder, manifest)
    return None


def _write_from_render(data: RenderedData, splits: dict[str, str], path: Path) -> tuple[int, int]:
    """The split examples' training rows, taken from the profiler's rendering in bulk (labels are the response
    tokens, the first token none), into an Arrow file in input order; returns the rows written and how many
    were truncated."""
    ids = data.table.column("example_id")
    rows = data.rows_where(pc.is_in(ids, value_set=pa.array(list(splits), pa.string())).to_numpy(False), ok=True)
    table = data.table.select(["example_id", "input_ids", "response_mask", "truncated"])
    confident_ids = pa.array([e for e, split in splits.items() if split == CONFIDENT], pa.string())
    n_truncated = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, _schema()) as w:
        for s in range(0, len(rows), TAKE_SPAN):
            part = take_rows(table, rows[s : s + TAKE_SPAN]).combine_chunks()
            input_ids, mask = part.column("input_ids").chunk(0), part.column("response_mask").chunk(0)
            offsets = input_ids.offsets.to_numpy() - input_ids.offsets[0].as_py()
            flat = pc.list_flatten(input_ids).to_numpy()
            labels = np.where(pc.list_flatten(mask).to_numpy().astype(bool), flat, -100).astype(np.int32)
            labels[offsets[:-1][np.diff(offsets) > 0]] = -100  # the first token has nothing to predict it
            eids = part.column("example_id")
            confident = pc.is_in(eids.chunk(0), value_set=confident_ids)
            batch = pa.RecordBatch.from_arrays(
                [
                    eids.chunk(0),
                    input_ids,
                    pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(labels, pa.int32())),
                    confident,
                    part.column("truncated").chunk(0),
                ],
                schema=_schema(),
            )
            w.write_batch(batch)
            n_truncated += int(pc.sum(part.column("truncated")).as_py() or 0)
    return len(rows), n_truncated


def load_training_set(
    profile: str,
    tokenizer,
    *,
    data: Sequence[str] | None = None,
    template: str = "auto",
    max_length: int = 2048,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
) -> TrainingSet:
    """Render the profile's split examples (or ``data`` joined to the profile) for the target tokenizer, or map
    the cache a run of the same profile, tokenizer and settings made.

    Examples longer than ``max_length`` are truncated; those left with no response token are dropped
    and counted.

    Args:
        cache_dir: the folder of caches (default: the profile's ``run_data/`` beside it).
        num_proc: processes for the rendering map (None or 0: one per CPU).

    Raises:
        ProfileMismatch: the profile has no split, or ``data`` holds examples the profile does not.
    """
    splits, digest = _profile_splits(profile)
    renderer = Renderer(tokenizer, template, max_length, truncate=True)
    key = "train-" + content_hash(
        {
            "format_version": CACHE_FORMAT,
            "profile": digest,
            "data": [source_digest(d, "train") for d in data or []],
            "tokenizer": tokenizer_digest(tokenizer),
            "template": renderer.template,
            "max_length": max_length,
        }
    )

    def build(tmp: Path) -> dict:
        if not data and (profiled := profile_render(profile, renderer)) is not None:
            n_kept, n_truncated = _write_from_render(profiled, splits, tmp / "rendered.arrow")
            if n_kept == len(splits):  # every split example is there, rendered as the target would
                return {
                    "files": ["rendered.arrow"],
                    "n_rows": len(splits),
                    "n_kept": n_kept,
                    "n_truncated": n_truncated,
                    "from_profile_render": True,
                }
            (tmp / "rendered.arrow").unlink()
        raw = tmp / "raw.arrow"
        n = _write_data_rows(profile, data, splits, raw) if data else _write_profile_rows(profile, raw)
        rendered, files = map_arrow(
            raw,
            render_training_batch,
            fn_kwargs={"renderer": renderer},
            features=_features(),
            remove_columns=RAW_SCHEMA.names,
            num_proc=num_proc,
            progress=True,
            desc="rendering for the target",
        )
        n_truncated = int(np.count_nonzero(rendered.data.column("truncated").to_numpy()))
        n_kept = len(rendered)
        del rendered
        raw.unlink()
        return {"files": files, "n_rows": n, "n_kept": n_kept, "n_truncated": n_truncated}

    path, manifest, _ = build_once(Path(cache_dir or default_cache_root(profile)), key, build)
    dropped = manifest["n_rows"] - manifest["n_kept"]
    if dropped:
        log.warning(
            "%d of %d examples had no response token within max_length=%d and were dropped",
            dropped,
            manifest["n_rows"],
            max_length,
        )
    dataset = open_files(path, manifest["files"])
    return TrainingSet(dataset, manifest["n_rows"], dropped, manifest["n_truncated"], path)


def _ids_and_flags(rows) -> tuple[list[str], np.ndarray]:
    if hasattr(rows, "column_names"):  # a datasets.Dataset: its columns, not its rows
        return list(rows["example_id"]), np.asarray(rows["confident"], dtype=bool)
    return [r["example_id"] for r in rows], np.asarray([bool(r["confident"]) for r in rows], dtype=bool)


def hold_out(rows, fraction: float, seed: int):
    """Split a training set (a ``datasets.Dataset``, or a list of rows) into (train, held out), stratified by
    split: ``round(fraction * n)`` of each split's ``n`` examples (at least one), drawn with ``seed``. The draw
    depends only on the example ids, not on their order."""
    ids, flags = _ids_and_flags(rows)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for flag in (True, False):
        chosen = sorted(e for e, f in zip(ids, flags) if f == flag)
        k = max(1, round(fraction * len(chosen))) if chosen else 0
        held.update(chosen[i] for i in rng.permutation(len(chosen))[:k])
    return select(rows, [e not in held for e in ids]), select(rows, [e in held for e in ids])


def select(rows, keep: Sequence[bool]):
    """The rows ``keep`` marks: a ``datasets.Dataset`` view (no copy), or a list."""
    if hasattr(rows, "select"):
        return rows.select(np.flatnonzero(keep))
    return [r for r, k in zip(rows, keep) if k]


def split_counts(rows) -> dict[str, int]:
    _, flags = _ids_and_flags(rows)
    return {"confident": int(flags.sum()), "unconfident": int(len(flags) - flags.sum())}


class PairCollator:
    """Pads a batch laid out as [confident..., unconfident...] and checks that layout."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        k = len(features) // 2
        flags = [f["confident"] for f in features]
        if len(features) % 2 or not all(flags[:k]) or any(flags[k:]):
            raise RuntimeError(
                "a batch is not [confident..., unconfident...]; was the PairedSampler replaced "
                "(e.g. by group_by_length)?"
            )
        return pad_batch(features, self.pad_token_id)


class EvalCollator:
    """Pads evaluation batches (any mix of splits) and keeps each row's split as a ``confident`` tensor."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_batch(features, self.pad_token_id)
        batch["confident"] = torch.tensor([bool(f["confident"]) for f in features])
        return batch
