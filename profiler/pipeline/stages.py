"""The stage loop of a run: stages in order, each recorded in the table's ``meta`` as it finishes.

``meta.stages`` maps a finished stage to ``"done"``; ``meta.stage_seconds`` adds up each stage's wall time over
every segment of the run, also the ones an interruption or a crash cut short, so after a resume `sftmix info`
shows what each stage cost in all.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class Recorded(Protocol):
    """A run's state as the stage loop sees it: the table (None until the first stage opens it) records each stage."""

    table: object | None


S = TypeVar("S", bound=Recorded)


@dataclass(frozen=True)
class Stage(Generic[S]):
    """One step of a run: its name in ``meta``, the line announcing it, and the work (given the run's state)."""

    name: str
    describe: Callable[[S], str]
    run: Callable[[S], None]


def _record(table, stage: str, seconds: float, done: bool) -> None:
    stages = table.get_meta("stages") or {}
    spent = table.get_meta("stage_seconds") or {}
    spent[stage] = round(spent.get(stage, 0.0) + seconds, 2)
    if done:
        stages[stage] = "done"
    table.set_meta({"stages": stages, "stage_seconds": spent})


def run_stages(stages: Sequence[Stage[S]], state: S, *, progress: bool) -> None:
    """Run ``stages`` in order on ``state``; ``state.table`` (set by the first stage) records each one."""
    for i, stage in enumerate(stages, 1):
        if progress:
            print(f"[stage {i}/{len(stages)}] {stage.describe(state)}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        finished = False
        try:
            stage.run(state)
            finished = True
        finally:
            table = state.table
            if table is not None:
                try:
                    _record(table, stage.name, time.perf_counter() - started, finished)
                except Exception as e:  # bookkeeping must not hide why the stage stopped
                    if finished:
                        raise
                    log.warning("could not record the time of stage %s: %s", stage.name, e)


def done_stages(table) -> dict[str, str]:
    return table.get_meta("stages") or {}
