"""The demo: the packaged SmolLM2-135M-Instruct scores a sample of the packaged datasets."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="demo_run", help="where the sample data and the table go")
    p.add_argument("--n-faq", type=int, default=200, help="FAQ examples to sample (503 in all)")
    p.add_argument("--n-chat", type=int, default=150, help="chatterbot dialogs to sample (~1.1k in all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")


def run_demo(args: argparse.Namespace) -> int:
    from profiler.assets import smollm2_checkpoint, write_demo_data
    from profiler.cli import _print_info
    from profiler.score_run import ScoreConfig, run_score

    work = Path(args.workdir)
    t0 = time.perf_counter()
    print("[1/3] preparing the packaged model (converted from GGUF once, then cached)")
    model = smollm2_checkpoint()
    t1 = time.perf_counter()
    print(f"      {model} ({t1 - t0:.1f}s)")
    print("[2/3] sampling the packaged data")
    specs = write_demo_data(work / "data", args.n_faq, args.n_chat, args.seed)
    print("[3/3] scoring every example")
    cfg = ScoreConfig(
        model=str(model),
        data=specs,
        out=str(work / "run.duckdb"),
        device=args.device,
        dtype=args.dtype,
        on_error="skip",
    )
    out = run_score(cfg)
    t2 = time.perf_counter()
    print(f"      scored in {t2 - t1:.1f}s\n")
    return _print_info(out)
