"""What token scores and IFD cost: `sftmix score` on the same data with --token-scores none, last and all.

Each variant is a real scoring run (``profiler.pipeline.run_score``, torch backend) into a fresh table; the script
times its scoring loop (``score_checkpoints``: checkpoint loading, forward passes, token texts, writes, IFD) in
CPU seconds of this process and in wall seconds, and reports the table's size on disk, each against ``none``.
Token scores alone are measured with ``--no-ifd``; the last row is the default run (``--token-scores last`` with
IFD), to show what IFD adds. Variants alternate ``--repeat`` times; the fastest run of each is compared (the
neighbours' load on a shared CPU only ever adds time: runs of the same code varied by 2x on a busy 2-core machine),
and the medians are shown too. The issue's target: ``last`` at most 10% slower than ``none``.

    python benchmarks/bench_token_scores.py                       # packaged SmolLM2-135M, 100 packaged examples
    python benchmarks/bench_token_scores.py --shape tiny --synthetic --tokenizer TOK --n 16 --repeat 1   # smoke

The checkpoints are hard-linked copies of one model (scoring time does not depend on the weights).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from shapes import SHAPES  # benchmarks/shapes.py
from workload import synthetic_examples  # benchmarks/workload.py

import profiler.pipeline.run as run_mod
from profiler import open_table
from profiler.config import ScoreConfig
from profiler.pipeline import run_score

# (name, --token-scores, --ifd)
VARIANTS = [("none", "none", False), ("last", "last", False), ("all", "all", False), ("last + IFD", "last", True)]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_dir(args, workdir: Path) -> Path:
    """The packaged SmolLM2 (default), a given model, or a random model of ``--shape`` with ``--tokenizer``."""
    if args.shape is None:
        if args.model:
            return Path(args.model)
        from profiler.assets import smollm2_checkpoint

        return smollm2_checkpoint()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    spec = dict(SHAPES[args.shape])
    spec["vocab_size"] = max(spec["vocab_size"], len(tok))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(spec.pop("model_type"), **spec))
    out = workdir / f"model-{args.shape}"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def data_files(args, workdir: Path) -> list[str]:
    if args.synthetic:
        path = workdir / "synthetic.jsonl"
        rows = [{"messages": ex.messages} for ex in synthetic_examples(args.n, seed=0)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return [str(path)]
    from profiler.assets import write_demo_data

    return write_demo_data(workdir / "data", args.n // 2, args.n - args.n // 2)


def checkpoints(model: Path, n: int, workdir: Path) -> list[str]:
    """``n`` distinct checkpoint directories of one model: hard links, no copies."""
    out = []
    for k in range(n):
        d = workdir / f"checkpoint-{k + 1}"
        if not d.exists():
            shutil.copytree(model, d, copy_function=os.link)
        out.append(str(d))
    return out


class Timed:
    """Wraps the scoring loop the score stage calls, adding up its CPU and wall seconds."""

    def __init__(self, fn):
        self.fn, self.cpu, self.wall = fn, 0.0, 0.0

    def __call__(self, *a, **k):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return self.fn(*a, **k)
        finally:
            self.cpu += time.process_time() - cpu
            self.wall += time.perf_counter() - wall


def run(args, model: Path, data: list[str], ckpts: list[str], out: Path, token_scores: str, ifd: bool):
    """One scoring run into a fresh table: (scoring CPU s, scoring wall s, table bytes, token score rows)."""
    out.unlink(missing_ok=True)
    cfg = ScoreConfig(
        model=str(model),
        data=data,
        out=str(out),
        checkpoints=ckpts,
        backend="torch",
        device=args.device,
        max_length=args.max_length,
        truncate=True,
        embed=False,
        token_scores=token_scores,
        ifd=ifd,
        progress=False,
    )
    timed = Timed(run_mod.score_checkpoints)
    run_mod.score_checkpoints = timed
    try:
        run_score(cfg)
    finally:
        run_mod.score_checkpoints = timed.fn
    with open_table(out) as t:
        n_token_rows = t.token_scores().height
    return timed.cpu, timed.wall, out.stat().st_size, n_token_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model directory (default: the packaged SmolLM2-135M-Instruct)")
    p.add_argument("--shape", choices=sorted(SHAPES), help="a random model of this shape instead (needs --tokenizer)")
    p.add_argument("--tokenizer", help="tokenizer directory for --shape")
    p.add_argument("--synthetic", action="store_true", help="synthetic examples instead of the packaged datasets")
    p.add_argument("--n", type=int, default=100, help="examples (packaged: half FAQ, half dialogs)")
    p.add_argument("--n-checkpoints", type=int, default=2)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 is steadier on a busy machine")
    p.add_argument("--workdir", help="default: a temporary directory, removed at the end")
    args = p.parse_args()
    if args.shape and not args.tokenizer:
        p.error("--shape needs --tokenizer")
    if args.threads:
        torch.set_num_threads(args.threads)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sftmix_bench_tokens_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        model = model_dir(args, workdir)
        data = data_files(args, workdir)
        ckpts = checkpoints(model, args.n_checkpoints, workdir)
        results: dict[str, list[tuple]] = {name: [] for name, _, _ in VARIANTS}
        for _ in range(args.repeat):  # alternate the variants, so drift on a shared machine hits them alike
            for name, mode, ifd in VARIANTS:
                out = workdir / f"run-{mode}-{int(ifd)}.duckdb"
                results[name].append(run(args, model, data, ckpts, out, mode, ifd))
        report(args, model, results, storage_per_token(workdir))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def storage_per_token(workdir: Path, n_examples: int = 10_000, seed: int = 0) -> str:
    """What token scores add to a table at scale, written directly (no model): ``n_examples`` of 20-200 tokens,
    one checkpoint, float NLLs of a realistic spread and short token texts, against the same table without them.
    (At the scoring runs' scale a table's size is mostly DuckDB's fixed allocation per table.)"""
    import random

    import numpy as np

    from profiler.scoring.base import ExampleScore
    from profiler.table.writer import TableWriter

    sizes, n_tokens = [], 0
    for keep in (False, True):
        rng, pick = np.random.default_rng(seed), random.Random(seed)
        path = workdir / f"size-{int(keep)}.duckdb"
        path.unlink(missing_ok=True)
        with TableWriter(path) as table:
            for b in range(n_examples // 50):
                lengths = [pick.randint(20, 200) for _ in range(50)]
                ids = [f"e{b}-{i}" for i in range(50)]
                nll = [rng.gamma(1.0, 2.0, n).astype(np.float32) for n in lengths]
                scores = [ExampleScore(i, float(v.sum()), len(v), None, v if keep else None) for i, v in zip(ids, nll)]
                texts = {i: pick.choices(_TEXTS, k=n) for i, n in zip(ids, lengths)} if keep else None
                table.write_scores(0, scores, texts)
                n_tokens += sum(lengths) if keep else 0
        sizes.append(path.stat().st_size)
    extra = sizes[1] - sizes[0]
    return (
        f"at scale ({n_examples} examples, {n_tokens} tokens, 1 checkpoint, written directly): "
        f"{sizes[0] / 1e6:.1f} MB without token scores, {sizes[1] / 1e6:.1f} MB with: {extra / n_tokens:.1f} bytes per "
        "token (NLL and text; each further checkpoint of --token-scores all adds the NLL only)"
    )


_TEXTS = [" the", " a", " of", " building", " permit", ".", ",", " weeks", "\n", " machine", "<|im_end|>", " science"]


def report(args, model: Path, results: dict[str, list[tuple]], storage: str) -> None:
    print(f"date: {datetime.date.today().isoformat()}")
    threads = torch.get_num_threads()
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), {args.device}"
    )
    source = "synthetic" if args.synthetic else "packaged"
    print(f"model: {model.name}; {args.n} {source} examples; {args.n_checkpoints} checkpoints; {args.repeat} runs each")

    def best(name: str, k: int) -> float:
        return min(r[k] for r in results[name])

    def med(name: str, k: int) -> float:
        return statistics.median(r[k] for r in results[name])

    head = f"{'variant':<11} {'CPU s':>7} {'ratio':>6}  {'wall s':>7} {'ratio':>6}  {'table MB':>8} {'ratio':>5}"
    print(f"fastest run of each ({args.repeat}); median ratios in brackets")
    print(head + "  runs (CPU s)")
    for name, runs in results.items():
        each = "/".join(f"{r[0]:.1f}" for r in runs)
        cpu, wall, size = (best(name, k) / best("none", k) for k in range(3))
        cpu_med, wall_med = (med(name, k) / med("none", k) for k in range(2))
        print(
            f"{name:<11} {best(name, 0):>7.2f} {cpu:>6.3f}  {best(name, 1):>7.2f} {wall:>6.3f}  "
            f"{best(name, 2) / 1e6:>8.2f} {size:>5.2f}  {each} ({runs[0][3]} token rows) "
            f"[median CPU {cpu_med:.3f}, wall {wall_med:.3f}]"
        )
    for k, what in ((0, "CPU"), (1, "wall")):
        ratio = best("last", k) / best("none", k)
        print(f"token scores (last) vs none: {100 * (ratio - 1):+.1f}% scoring {what} time (target: at most +10%)")
    print(f"table size {storage}")


if __name__ == "__main__":
    main()
