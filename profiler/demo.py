"""The demo: the packaged SmolLM2-135M-Instruct, as reference model, profiles a sample of the packaged data."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="demo_run", help="where the sample data, checkpoints and table go")
    p.add_argument("--n-faq", type=int, default=150, help="FAQ examples to sample (503 in all)")
    p.add_argument("--n-chat", type=int, default=150, help="chatterbot dialogs to sample (~1.1k in all)")
    p.add_argument("--n-checkpoints", type=int, default=3, help="reference checkpoints to score")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True, help="LoRA (default) or full FT")
    p.add_argument("--max-length", type=int, default=384, help="longer examples are truncated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="open the dashboard on the table when done (default; Ctrl-C stops it)",
    )
    p.add_argument("--port", type=int, default=8501, help="dashboard port (0: a free one)")


def run_demo(args: argparse.Namespace) -> int:
    from profiler.assets import smollm2_checkpoint, write_demo_data
    from profiler.cli import print_info
    from profiler.finetune import FinetuneConfig
    from profiler.profile_run import run_profile
    from profiler.score_run import ScoreConfig

    work = Path(args.workdir)
    t0 = time.perf_counter()
    print("preparing the packaged model (converted from GGUF once, then cached)", flush=True)
    model = smollm2_checkpoint()
    print(f"  {model} ({time.perf_counter() - t0:.1f}s)")
    specs = write_demo_data(work / "data", args.n_faq, args.n_chat, args.seed)
    score_cfg = ScoreConfig(
        model=str(model),
        data=specs,
        out=str(work / "run.duckdb"),
        device=args.device,
        dtype=args.dtype,
        on_error="skip",
    )
    ft_cfg = FinetuneConfig(n_checkpoints=args.n_checkpoints, lora=args.lora, seed=args.seed)
    t1 = time.perf_counter()
    out = run_profile(score_cfg, ft_cfg)
    print(f"profiled in {time.perf_counter() - t1:.1f}s\n")
    print_info(out)
    if not args.dashboard:
        return 0
    from dashboard.launch import run_dashboard

    print(f"\nopening the dashboard (or later: sftmix dashboard {out})")
    return run_dashboard(out, port=args.port)
