"""The demo: the packaged SmolLM2-135M-Instruct, as reference model, profiles a sample of the packaged data."""

from __future__ import annotations

import time
from pathlib import Path

from profiler.config import DemoOptions


def run_demo(args: DemoOptions, command: list[str] | None = None) -> int:
    """Profile the sample with the packaged model into ``WORKDIR/run.duckdb``; ``command`` (the command line) is
    recorded in its ``meta``."""
    from profiler.assets import PACKAGED_MODEL, write_demo_data
    from profiler.config import FinetuneConfig, ScoreConfig
    from profiler.hf import resolve_model
    from profiler.pipeline import run_profile
    from profiler.table.info import info_text, table_info

    work = Path(args.workdir)
    t0 = time.perf_counter()
    print("preparing the packaged model (converted from GGUF once, then cached)", flush=True)
    model = resolve_model(PACKAGED_MODEL)
    print(f"  {model} ({time.perf_counter() - t0:.1f}s)")
    specs = write_demo_data(work / "data", args.n_faq, args.n_chat, args.seed)
    score_cfg = ScoreConfig(
        model=str(model),
        data=specs,
        out=str(work / "run.duckdb"),
        device=args.device,
        dtype=args.dtype,
        max_length=args.max_length,
        truncate=True,
        on_error="skip",
    )
    ft_cfg = FinetuneConfig(n_checkpoints=args.n_checkpoints, lora=args.lora, seed=args.seed)
    t1 = time.perf_counter()
    out = run_profile(score_cfg, ft_cfg, command=command)
    print(f"profiled in {time.perf_counter() - t1:.1f}s\n")
    print(info_text(table_info(out)))
    if not args.dashboard:
        return 0
    from dashboard.launch import run_dashboard

    print(f"\nopening the dashboard (or later: sftmix dashboard {out})")
    return run_dashboard(out, port=args.port)
