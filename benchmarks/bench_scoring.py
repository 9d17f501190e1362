"""Scoring speed: our batched scorer vs the one-example-at-a-time forward pass of S2L, LESS and Superfiltering.

Both score the same token ids with the same model in one run; the script prints tokens/s for each, their
ratio, the largest disagreement in mean NLL, and model FLOP utilization when --peak-tflops is given.

    python benchmarks/bench_scoring.py                          # SmolLM2-135M (packaged) on the packaged data
    python benchmarks/bench_scoring.py --shape gemma-2b --device cuda --dtype bfloat16 --peak-tflops 989
    .venv-vllm/bin/python benchmarks/bench_scoring.py --vllm   # also vLLM on the same token ids (needs vLLM)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from shapes import SHAPES  # benchmarks/shapes.py
from workload import synthetic_examples  # benchmarks/workload.py

from profiler.assets import smollm2_checkpoint, write_demo_data
from profiler.data import Renderer, load_examples
from profiler.hf import load_causal_lm, load_tokenizer
from profiler.scoring import ScoreItem, TorchScorer


def build_model(args, device, dtype, min_vocab: int = 0):
    if args.shape is None:
        return load_causal_lm(str(args.model or smollm2_checkpoint()), device=device, dtype=dtype)
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(SHAPES[args.shape])
    spec["vocab_size"] = max(spec["vocab_size"], min_vocab)  # every token id of the tokenizer is valid
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def one_at_a_time(model, items, device) -> tuple[list[float], float]:
    """The common baseline: one forward per example with labels, full logits, the model's own loss."""
    out = []
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for it in items:
            ids = torch.tensor([list(it.input_ids)], device=device)
            labels = ids.clone()
            labels[0, ~torch.tensor(list(it.response_mask), device=device)] = -100
            out.append(model(input_ids=ids, labels=labels).loss.item())
    sync(device)
    return out, time.perf_counter() - t0


def ours(model, items, args, device) -> tuple[list[float], float]:
    scorer = TorchScorer(model, max_tokens=args.max_tokens, share_prefix=not args.no_share_prefix)
    sync(device)
    t0 = time.perf_counter()
    got = {s.example_id: s.mean_nll for batch in scorer.score(items, progress=False) for s in batch}
    sync(device)
    return [got[it.example_id] for it in items], time.perf_counter() - t0


def with_vllm(model, model_dir, items, args) -> tuple[list[float], float, float]:
    """vLLM's prompt log-probs on the same items: (mean NLLs, scoring seconds, engine start seconds)."""
    import os
    import tempfile

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from profiler.scoring.vllm_backend import VllmScorer

    if model_dir is None:  # a random model of a real shape: save it so vLLM can load the same weights
        model_dir = tempfile.mkdtemp(prefix="sftmix_bench_model_")
        model.save_pretrained(model_dir)
    t0 = time.perf_counter()
    engine = VllmScorer(
        str(model_dir),
        dtype=args.dtype,
        max_model_len=max(len(it.input_ids) for it in items) + 1,
        max_num_batched_tokens=args.vllm_batch_tokens,
    )
    start = time.perf_counter() - t0
    engine.score(items[:4], progress=False).__next__()  # warm-up
    t0 = time.perf_counter()
    got = {s.example_id: s.mean_nll for batch in engine.score(items, progress=False) for s in batch}
    elapsed = time.perf_counter() - t0
    engine.close()
    return [got[it.example_id] for it in items], elapsed, start


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model directory (default: the packaged SmolLM2-135M-Instruct)")
    p.add_argument("--shape", choices=sorted(SHAPES), help="random model of a real shape instead of --model")
    p.add_argument("--n", type=int, default=200, help="examples (half FAQ, half dialogs)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--max-tokens", type=int, help="padded tokens per batch (default: 1024 on CPU, 16384 on GPU)")
    p.add_argument("--no-share-prefix", action="store_true", help="do not reuse the KV cache of shared prefixes")
    p.add_argument("--peak-tflops", type=float, help="device peak for the dtype, to report model FLOP utilization")
    p.add_argument("--tokenizer", help="tokenizer directory for --shape (default: the packaged SmolLM2's)")
    p.add_argument("--synthetic", action="store_true", help="synthetic examples instead of the packaged data")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each, alternating; medians are compared")
    p.add_argument("--workdir", default="/tmp/sftmix_bench")
    p.add_argument("--vllm", action="store_true", help="also time the vLLM backend on the same token ids")
    p.add_argument("--vllm-batch-tokens", type=int, help="vLLM max_num_batched_tokens (default: vLLM's)")
    args = p.parse_args()

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    tok = load_tokenizer(str(args.tokenizer or args.model or smollm2_checkpoint()))
    renderer = Renderer(tok, max_length=2048, truncate=True)
    if args.synthetic:  # where the packaged datasets are not installed (a GPU machine, say)
        examples = [(f"ex{i}", ex) for i, ex in enumerate(synthetic_examples(args.n, 0))]
    else:
        specs = write_demo_data(__import__("pathlib").Path(args.workdir), args.n // 2, args.n - args.n // 2)
        examples = [(r.example_id, r.example) for r in load_examples(specs)]
    items = []
    for example_id, ex in examples:
        rx = renderer.render(ex)
        items.append(ScoreItem(example_id, rx.input_ids, rx.response_mask))
    tokens = sum(len(it.input_ids) for it in items)
    model = build_model(args, device, dtype, len(tok))
    n_params = sum(p.numel() for p in model.parameters())

    ours(model, items[:4], args, device)  # warm-up
    # Alternate the two, so a slow spell of a shared machine hits both alike, and compare medians.
    base_runs, our_runs = [], []
    for _ in range(args.repeat):
        base_nll, t = one_at_a_time(model, items, device)
        base_runs.append(t)
        our_nll, t = ours(model, items, args, device)
        our_runs.append(t)
    base_s, our_s = statistics.median(base_runs), statistics.median(our_runs)
    diff = max(abs(a - b) for a, b in zip(base_nll, our_nll))
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"device={device} dtype={args.dtype} torch={torch.__version__}"
    )
    print(
        f"model: {args.shape or args.model or 'SmolLM2-135M-Instruct'} ({n_params / 1e6:.0f}M params); "
        f"{len(items)} examples, {tokens} tokens"
    )
    runs = lambda ts: ", ".join(f"{t:.1f}" for t in ts)  # noqa: E731
    print(f"one-at-a-time HF forward: {tokens / base_s:10.1f} tok/s  (median of {runs(base_runs)} s)")
    print(f"sftmix torch scorer:      {tokens / our_s:10.1f} tok/s  (median of {runs(our_runs)} s)")
    print(f"speed-up: {base_s / our_s:.2f}x   max |mean NLL difference|: {diff:.2e}")
    if args.vllm:
        model_dir = None if args.shape else str(args.model or smollm2_checkpoint())
        v_nll, v_s, v_start = with_vllm(model, model_dir, items, args)
        v_diff = max(abs(a - b) for a, b in zip(v_nll, our_nll))
        print(f"vLLM backend:             {tokens / v_s:10.1f} tok/s  ({v_s:.1f}s, engine start {v_start:.1f}s)")
        print(f"sftmix torch / vLLM: {v_s / our_s:.2f}x   max |mean NLL difference|: {v_diff:.2e}")
    if args.peak_tflops:
        mfu = 2 * n_params * tokens / our_s / (args.peak_tflops * 1e12)
        print(f"model FLOP utilization (2 x params x tokens / time / peak): {100 * mfu:.1f}%")


if __name__ == "__main__":
    main()
