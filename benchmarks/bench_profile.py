"""Profile stages at scale: a random model of a real shape fine-tuned and scored on synthetic examples.

Runs the profiler's own fine-tuning (``profiler.finetune``: Trainer, C evenly spaced checkpoints) and torch
scorer on each checkpoint, times each stage, and projects the run to Alpaca-52K (52,002 examples) by example
count, assuming Alpaca's examples are as long as these synthetic ones (the script prints their mean length;
scale by the ratio of mean lengths otherwise). It needs neither DuckDB nor polars (the table stages cost
seconds: see the demo's row in benchmarks/README.md), so it runs where only torch and transformers are.

    python benchmarks/bench_profile.py --shape gemma-2b --n 3000 --device cuda          # a lent GPU
    python benchmarks/bench_profile.py --shape tiny --n 64 --n-checkpoints 2             # a CPU smoke run

Without the packaged SmolLM2 (a GPU machine), pass a tokenizer directory saved elsewhere with --tokenizer.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from shapes import SHAPES  # benchmarks/shapes.py
from workload import synthetic_examples  # benchmarks/workload.py

from profiler.data.render import Renderer
from profiler.finetune import FinetuneConfig, finetune
from profiler.hf import is_adapter_dir, load_causal_lm, load_tokenizer, resolve_device, resolve_dtype
from profiler.scoring import ScoreItem, TorchScorer

ALPACA_N = 52002


def random_model_dir(shape: str, tokenizer_dir: str, workdir: Path, dtype: torch.dtype) -> Path:
    """Save a randomly initialized model of ``shape`` (vocabulary at least the tokenizer's) with the tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = load_tokenizer(tokenizer_dir)
    spec = dict(SHAPES[shape])
    spec["vocab_size"] = max(spec["vocab_size"], len(tok))
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    out = workdir / f"model-{shape}"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="gemma-2b")
    p.add_argument("--n", type=int, default=3000, help="synthetic examples")
    p.add_argument("--n-checkpoints", type=int, default=5)
    p.add_argument("--lora", action="store_true", help="LoRA reference fine-tuning (default: full)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="scoring dtype (auto: bfloat16 on a GPU, else float32)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the packaged SmolLM2's)")
    p.add_argument("--workdir", help="where the model and checkpoints go (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sftmix_bench_profile_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.tokenizer is None:
        from profiler.assets import smollm2_checkpoint

        args.tokenizer = str(smollm2_checkpoint())
    times: dict[str, float] = {}

    t = time.perf_counter()
    model_dir = random_model_dir(args.shape, args.tokenizer, workdir, torch.bfloat16)
    times["build random model (not a profile stage)"] = time.perf_counter() - t

    t = time.perf_counter()
    tok = load_tokenizer(str(model_dir))
    renderer = Renderer(tok, max_length=2048, truncate=True)
    items = []
    for i, ex in enumerate(synthetic_examples(args.n, args.seed)):
        r = renderer.render(ex, row=i)
        items.append(ScoreItem(f"ex{i}", r.input_ids, r.response_mask))
    times["data (render + tokenize)"] = time.perf_counter() - t
    lengths = [len(it.input_ids) for it in items]
    tokens = sum(lengths)

    cfg = FinetuneConfig(n_checkpoints=args.n_checkpoints, lora=args.lora, batch_size=args.batch_size, seed=args.seed)
    t = time.perf_counter()
    dirs = finetune(
        str(model_dir), items, cfg, workdir / "checkpoints", pad_token_id=tok.pad_token_id or 0, device=str(device)
    )
    times["finetune (1 epoch, C checkpoints saved)"] = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.empty_cache()

    per_ckpt = []
    t = time.perf_counter()
    for d in dirs:
        t0 = time.perf_counter()
        base = str(model_dir) if is_adapter_dir(d) else None
        model = load_causal_lm(str(d), device=device, dtype=dtype, base=base)
        load_s = time.perf_counter() - t0
        scorer = TorchScorer(model, pad_token_id=tok.pad_token_id or 0)
        embed = d == dirs[-1]  # the last checkpoint's pass also mean-pools embeddings, as a profile does
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        n_scored = sum(len(b) for b in scorer.score(items, progress=False, embed=embed))
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_ckpt.append((load_s, time.perf_counter() - t1))
        assert n_scored == len(items)
        del model, scorer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    times[f"score ({len(dirs)} checkpoints, loads included)"] = time.perf_counter() - t

    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {gpu}; device={device} scoring dtype={dtype} torch={torch.__version__}")
    print(
        f"model: {args.shape} (random weights), {'LoRA' if args.lora else 'full'} fine-tuning, batch "
        f"{args.batch_size}; {args.n} synthetic examples, {tokens} tokens (mean {tokens / len(items):.0f}, "
        f"median {statistics.median(lengths):.0f}); tokenizer {Path(args.tokenizer).name}"
    )
    scale = ALPACA_N / args.n
    print(f"{'stage':48s} {'seconds':>9s} {'x52,002/N (Alpaca-52K)':>24s}")
    for name, s in times.items():
        proj = "" if name.startswith("build") else f"{s * scale / 60:20.1f} min"
        print(f"{name:48s} {s:9.1f} {proj}")
    total = sum(s for name, s in times.items() if not name.startswith("build"))
    print(f"{'total':48s} {total:9.1f} {total * scale / 60:20.1f} min")
    score_s = [s for _, s in per_ckpt]
    print(
        f"scoring alone: {tokens / statistics.median(score_s):.0f} tok/s per checkpoint (median), "
        f"loads {statistics.median([x for x, _ in per_ckpt]):.1f} s each"
    )


if __name__ == "__main__":
    main()
