"""What `sftmix info` says about a table, as text or as JSON: its summary and, for an unfinished run, where it
stopped and the command that resumes it (:mod:`profiler.table.progress`). The demo prints the same text."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from profiler.table.progress import unfinished
from profiler.table.reader import open_table


def table_info(path: str | Path) -> dict[str, Any]:
    """The table's summary (:meth:`ConfidenceTable.summary`) with ``unfinished``: None for a finished run, else
    where it stopped (``what``, ``done``, ``resume``)."""
    with open_table(path) as t:
        s = t.summary()
        u = unfinished(t, s)
    return {**s, "unfinished": None if u is None else dataclasses.asdict(u)}


def info_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, default=str)


def info_text(s: dict[str, Any]) -> str:
    """The summary as `sftmix info` prints it, one aligned line per fact."""
    u, p = s["unfinished"], s["perplexity"]
    lines = [
        f"table           {s['path']} (schema {s['schema_version']}, sftmix {s['sftmix_version']})",
        f"created         {s['created_at']}",
        f"reference model {s['reference_model']}  template: {s['template']}",
        f"examples        {s['examples']}  status: " + ", ".join(f"{k}={v}" for k, v in s["status"].items()),
        "sources         " + ", ".join(f"{k}={v}" for k, v in s["sources"].items()),
        f"checkpoints     {s['checkpoints']}  scores: {s['scores']}",
        "splits          " + (", ".join(f"{k}={v}" for k, v in s["splits"].items()) or "(none yet)"),
    ]
    if u is not None:
        lines.append(f"not finished    {u['what']}; stages done: {', '.join(u['done']) or 'none'}")
        lines.append(f"to finish it    {u['resume']}")
    if s.get("stage_seconds"):
        lines.append("stage times     " + ", ".join(f"{k} {v:.1f}s" for k, v in s["stage_seconds"].items()))
    if p["median"] is not None:  # confidence is minus the mean perplexity over the checkpoints
        lines.append(f"mean perplexity median split at {p['median']:.4g} (from {p['min']:.4g} to {p['max']:.4g})")
    return "\n".join(lines)
