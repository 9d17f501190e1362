"""Scoring at scale: deterministic shards written to part files, merged into one table.

``sftmix score --shard i/N --out run.duckdb`` scores the examples whose id hashes to ``i`` (of ``N``) and writes
``run.part-i-of-N.duckdb``: the slice's rows of the ``examples`` table (a row of any status belongs to the shard its
id hashes to, so the parts together account for every row), the checkpoints, and the slice's scores and embeddings.
Every shard maps the run's one rendered-data cache (``run_data/``) instead of rendering the data again. ``sftmix
merge run.duckdb`` checks that the parts belong to one run and are all there and complete, and writes ``run.duckdb``
with confidence and the embedding map. A shard that died is re-run alone (it resumes); merging again rebuilds the
same table.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from profiler.confidence import compute_confidence
from profiler.embed import project_table
from profiler.errors import SftmixError, TableError
from profiler.table.reader import open_table
from profiler.table.writer import TableWriter, check_output_table

# What every part of one run must share.
_SAME_RUN = ("dataset_fingerprint", "score_settings", "reference_model", "template")


def in_shard(example_id: str, index: int, count: int) -> bool:
    """Whether an example belongs to shard ``index`` of ``count``: a hash of its id, whatever the row order."""
    return int(hashlib.sha256(example_id.encode()).hexdigest()[:15], 16) % count == index


def part_path(out: str | Path, index: int, count: int) -> Path:
    """``run.duckdb``, 1, 4 -> ``run.part-1-of-4.duckdb``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.part-{index}-of-{count}{out.suffix or '.duckdb'}")


def remove_part(path: str | Path) -> None:
    """Delete a part file (and its write-ahead log) once its scores are in the table."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def find_parts(out: str | Path) -> list[Path]:
    """The part files beside ``out`` (``run.part-*-of-*.duckdb``), in shard order."""
    out = Path(out)
    pat = re.compile(rf"^{re.escape(out.stem)}\.part-(\d+)-of-(\d+){re.escape(out.suffix or '.duckdb')}$")
    found = [(int(m.group(1)), p) for p in out.parent.glob("*") if (m := pat.match(p.name))]
    return [p for _, p in sorted(found)]


def _part_info(path: Path) -> dict:
    with open_table(path) as t:
        shard = t.meta.get("shard")
        if not shard:
            raise TableError(f"{path} is not a part file (written without --shard)")
        return {
            "path": path,
            "index": shard["index"],
            "count": shard["count"],
            "complete": bool(t.meta.get("shard_complete")),
            "run": {k: t.meta.get(k) for k in _SAME_RUN},
            "checkpoints": t.checkpoints.select("path", "step", "fraction", "kind").rows(),
            "embedding_checkpoint": t.meta.get("embedding_checkpoint"),
        }


def check_parts(parts: Sequence[str | Path]) -> list[dict]:
    """Refuse parts of different runs, shard counts or checkpoints; name missing and unfinished shards."""
    if not parts:
        raise SftmixError("no part files to merge (expected NAME.part-i-of-N.duckdb beside the output)")
    infos = [_part_info(Path(p)) for p in parts]
    first = infos[0]
    for info in infos[1:]:
        if info["count"] != first["count"]:
            raise TableError(f"{info['path']} is shard of {info['count']}, {first['path']} of {first['count']}")
        diff = [k for k in _SAME_RUN if info["run"][k] != first["run"][k]]
        if info["checkpoints"] != first["checkpoints"]:
            diff.append("checkpoints")
        if diff:
            raise TableError(f"{info['path']} and {first['path']} are parts of different runs (differ in {diff})")
    seen: dict[int, Path] = {}
    for info in infos:
        if info["index"] in seen:
            raise TableError(f"shard {info['index']} given twice: {seen[info['index']]} and {info['path']}")
        seen[info["index"]] = info["path"]
    n = first["count"]
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        names = ", ".join(f"{i} ({part_path(_merged_name(first['path']), i, n).name})" for i in missing)
        raise TableError(f"missing shard(s) of {n}: {names}; run `sftmix score --shard i/{n}` for each")
    unfinished = [i["index"] for i in infos if not i["complete"]]
    if unfinished:
        raise TableError(
            f"shard(s) {unfinished} of {n} did not finish; re-run `sftmix score --shard i/{n}` for each (it resumes)"
        )
    return sorted(infos, key=lambda i: i["index"])


def _merged_name(part: Path) -> Path:
    return part.with_name(re.sub(r"\.part-\d+-of-\d+", "", part.name))


def merge_parts(
    out: str | Path,
    parts: Sequence[str | Path] | None = None,
    *,
    n_bins: int = 10,
    projection: str = "auto",
    projection_seed: int = 0,
    projection_sample: int = 50_000,
) -> Path:
    """Merge complete part files into ``out`` (rebuilt from the parts each time, written atomically).

    An existing ``out`` is replaced only when it is an sftmix table (a previous merge, say).

    Args:
        parts: the part files; default: those beside ``out`` (``find_parts``).
    """
    out = Path(out)
    tmp = out.with_name(out.name + ".merging")
    for path in (out, tmp):  # both are replaced: only when they are sftmix tables (or absent)
        check_output_table(path)
    infos = check_parts(list(parts) if parts else find_parts(out))
    tmp.unlink(missing_ok=True)
    try:
        with TableWriter(tmp) as table:
            table.insert_parts([i["path"] for i in infos])
            score_config = table.get_meta("score_config") or {}
            table.set_meta({"score_config": {**score_config, "shard": None, "workers": 1}})
            expected = table.get_meta("dataset_rows")
            if expected is not None and table.n_examples() != expected:
                raise TableError(f"the parts hold {table.n_examples()} of the data's {expected} rows")
            n_ok, n_ckpt, n_scores = table.n_ok_examples(), len(infos[0]["checkpoints"]), table.n_scores()
            if n_scores != n_ok * n_ckpt:
                raise TableError(f"the parts hold {n_scores} scores, expected {n_ok} examples x {n_ckpt} checkpoints")
            table.write_confidence(compute_confidence(table.scores_frame(), table.checkpoint_ids(), n_bins))
            project_table(table, method=projection, seed=projection_seed, fit_sample=projection_sample)
    except BaseException:
        tmp.unlink(missing_ok=True)  # nothing half-written is left behind
        raise
    os.replace(tmp, out)
    return out
