"""Where an unfinished table's run stopped, and the command that goes on from there.

A run records each stage in ``meta.stages`` as it finishes (:mod:`profiler.pipeline.stages`) and, when it was
started from the command line, that command in ``meta.command`` (its argv and working directory): running the same
command again resumes it. `sftmix info` shows both; `sftmix export` names them when it refuses the table.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.table.reader import ConfidenceTable

# What each stage of a run (profiler.pipeline.run) leaves undone while it is not finished, in run order.
STAGE_TEXT = {
    "data": "the data stage has not completed",
    "finetune": "fine-tuning has not completed",
    "score": "scoring has not completed",
    "confidence": "the confidence split has not been computed",
    "embed": "the semantic map of the embeddings has not been computed",
}


@dataclass(frozen=True)
class Unfinished:
    """The first stage a table lacks (``merge`` for a shard's finished part file), what it leaves undone, the
    stages done, and how to go on (``re-run `...```, as a user reads it)."""

    stage: str
    what: str
    done: list[str]
    resume: str


def merged_name(part: Path) -> str:
    """``run.part-1-of-4.duckdb`` -> ``run.duckdb`` beside it (``OUT`` for a name of another form)."""
    m = re.match(r"^(?P<stem>.+)\.part-\d+-of-\d+(?P<suffix>\.[^.]+)?$", part.name)
    return str(part.with_name(m.group("stem") + (m.group("suffix") or ".duckdb"))) if m else "OUT"


def recorded_command(meta: dict[str, Any]) -> str | None:
    """The command line that started the run's latest segment, quoted for a shell, with the folder it ran in when
    that is not this one and the launcher's processes when there were several; None when none was recorded (a run
    from Python, or a table written before commands were recorded)."""
    command = meta.get("command")
    if not isinstance(command, dict) or not command.get("argv"):
        return None
    text = f"`{shlex.join(str(a) for a in command['argv'])}`"
    cwd = command.get("cwd")
    if cwd and os.path.abspath(cwd) != os.getcwd():
        text += f" in {cwd}"
    world = meta.get("launcher_world") or 1
    if world > 1:
        text += f" under the same launcher ({world} processes)"
    return text


def unfinished(t: ConfidenceTable, summary: dict[str, Any] | None = None) -> Unfinished | None:
    """Where ``t``'s run stopped, or None when every stage of it finished."""
    meta = t.meta
    stages: dict[str, Any] = meta.get("stages") or {}
    done = [k for k, v in stages.items() if v == "done"]
    command = recorded_command(meta)
    shard = meta.get("shard")
    if shard:
        where = f"shard {shard.get('index')} of {shard.get('count')}" if isinstance(shard, dict) else "a shard"
        if meta.get("shard_complete"):
            merged = merged_name(t.path)
            return Unfinished("merge", f"a part file ({where}) not merged yet", done, f"run `sftmix merge {merged}`")
        stage = next((st for st in ("data", "score") if stages.get(st) != "done"), "score")
        how = f"re-run {command}" if command else "re-run its `sftmix score --shard` with the same --out"
        return Unfinished(stage, f"{STAGE_TEXT[stage]} ({where})", done, how)
    if meta.get("merged_from"):  # `sftmix merge` writes its table whole, at once
        return None
    s = summary if summary is not None else t.summary()
    if not stages and sum(s["splits"].values()):  # a table from before stages were recorded, finished
        return None
    is_profile = "finetune" in stages or meta.get("finetune_config") is not None
    order = [st for st in STAGE_TEXT if is_profile or st != "finetune"]
    stage = next((st for st in order if stages.get(st) != "done"), None)
    if stage is None:
        return None
    what = STAGE_TEXT[stage]
    ok = s["status"].get("ok", 0)
    if stage == "score" and s["checkpoints"] and ok:
        what += f" ({s['scores']} of {ok * s['checkpoints']} scores)"
    if command is not None:
        return Unfinished(stage, what, done, f"re-run {command}")
    name = "`sftmix profile`" if is_profile else "`sftmix score`" if stages else "`sftmix profile`/`sftmix score`"
    return Unfinished(stage, what, done, f"re-run {name} with the same --out")
