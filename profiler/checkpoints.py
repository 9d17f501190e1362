"""Finding checkpoints to score and what step and fraction of the epoch each one is."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from profiler.errors import ModelError
from profiler.models import is_adapter_dir
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
