"""Finding checkpoints to score and what step and fraction of the epoch each one is."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from profiler.errors import ModelError
from profiler.hf import is_adapter_dir
from profiler.table.writer import CheckpointInfo

_STEP = re.compile(r"checkpoint-(\d+)$")


def _trainer_state(path: Path) -> dict:
    f = path / "trainer_state.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _expand(path: Path) -> list[Path]:
    """A Trainer output directory stands for its ``checkpoint-N`` subdirectories, in step order."""
    subs = [p for p in path.iterdir() if p.is_dir() and _STEP.search(p.name)] if path.is_dir() else []
    if subs and not (path / "config.json").is_file() and not is_adapter_dir(path):
        return sorted(subs, key=lambda p: int(_STEP.search(p.name).group(1)))
    return [path]


def discover_checkpoints(model: str, checkpoints: Sequence[str]) -> list[CheckpointInfo]:
    """The checkpoints to score: the given directories (expanded), or the model itself when none are given.

    Step and epoch fraction come from ``trainer_state.json`` when present, else from the directory name
    and the checkpoint's position.
    """
    if not checkpoints:
        return [CheckpointInfo(path=str(model), step=None, fraction=None, kind="model")]
    paths: list[Path] = []
    for c in checkpoints:
        p = Path(c)
        if not p.exists():
            raise ModelError(f"checkpoint directory does not exist: {c}")
        paths.extend(_expand(p))
    infos = []
    for i, p in enumerate(paths):
        state = _trainer_state(p)
        m = _STEP.search(p.name)
        step = state.get("global_step", int(m.group(1)) if m else None)
        max_steps = state.get("max_steps")
        fraction = step / max_steps if step is not None and max_steps else (i + 1) / len(paths)
        kind = "adapter" if is_adapter_dir(p) else "model"
        infos.append(CheckpointInfo(path=str(p.resolve()), step=step, fraction=fraction, kind=kind))
    return infos


_SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers")


def _shape(path: str | Path) -> dict:
    f = Path(path) / "config.json"
    cfg = json.loads(f.read_text()) if f.is_file() else {}
    return {k: cfg.get(k) for k in _SHAPE_KEYS}


def check_compatible(model: str, checkpoints: Sequence[CheckpointInfo]) -> None:
    """Refuse checkpoints of another model (a different architecture, size or vocabulary than ``model``)."""
    if not (Path(model) / "config.json").is_file():
        return  # a hub model: its config is not at hand without a download
    want = _shape(model)
    for info in checkpoints:
        if info.kind == "adapter":
            base = json.loads((Path(info.path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if base and (Path(base) / "config.json").is_file() and _shape(base) != want:
                raise ModelError(
                    f"adapter checkpoint {info.path} was trained on {base}, whose shape {_shape(base)} "
                    f"differs from --model {model} {want}"
                )
            continue
        got = _shape(info.path)
        if got != want:
            diff = {k: (got[k], want[k]) for k in _SHAPE_KEYS if got[k] != want[k]}
            raise ModelError(f"checkpoint {info.path} is from another model than {model}: {diff} (checkpoint, model)")
