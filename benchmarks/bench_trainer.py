"""Training-step cost of SFTMix: vs plain NTP, and our chunked loss vs a full-logits implementation.

Each variant runs in its own process (so peak memory is its own) on the same model and batch:
  ntp          the model's own loss, model(**batch).loss (full logits), backward
  sftmix       trainer_plugin.sftmix_loss (chunked, recomputed LM head), backward
  sftmix_full  the same loss computed from full [tokens x vocab] logits, backward
It prints median step time and peak memory per variant and the ratios the SFTMix issue asks about.

    python benchmarks/bench_trainer.py                                  # SmolLM2-135M on CPU
    python benchmarks/bench_trainer.py --shape gemma-2b --device cuda --dtype bfloat16 --seq 1024 --batch 8
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from shapes import SHAPES  # benchmarks/shapes.py


def build_model(shape: str | None, device, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    if shape is None:
        from profiler.assets import smollm2_checkpoint

        return AutoModelForCausalLM.from_pretrained(smollm2_checkpoint(), dtype=dtype).to(device)
    spec = dict(SHAPES[shape])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def make_batch(vocab: int, batch: int, seq: int, device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (batch, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    prompt = (lengths * 0.3).long()
    pos = torch.arange(seq)[None]
    attn = (pos < lengths[:, None]).long()
    labels = torch.where((pos >= prompt[:, None]) & (attn == 1), ids, torch.full_like(ids, -100))
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": attn, "labels": labels}.items()}


def full_logits_sftmix(model, bc, bu, lam, mu):
    """SFTMix computed the obvious way: full logits for the whole batch and for the mixed states."""
    ids = torch.cat([bc["input_ids"], bu["input_ids"]])
    attn = torch.cat([bc["attention_mask"], bu["attention_mask"]])
    labels = torch.cat([bc["labels"], bu["labels"]])
    out = model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    logits = out.logits.float()
    ntp = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    h, k = out.hidden_states[-1], bc["input_ids"].shape[0]
    z, yc, yu = [], [], []
    for i in range(k):
        pc = (labels[i, 1:] != -100).nonzero().squeeze(1)
        pu = (labels[k + i, 1:] != -100).nonzero().squeeze(1)
        n = min(len(pc), len(pu))
        z.append(lam * h[i, pc[:n]] + (1 - lam) * h[k + i, pu[:n]])
        yc.append(labels[i, 1:][pc[:n]])
        yu.append(labels[k + i, 1:][pu[:n]])
    mixed = model.lm_head(torch.cat(z)).float()
    mix = lam * F.cross_entropy(mixed, torch.cat(yc)) + (1 - lam) * F.cross_entropy(mixed, torch.cat(yu))
    return ntp + mu * mix


def run_variant(args) -> dict:
    from trainer_plugin.loss import sftmix_loss

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = build_model(args.shape, device, dtype)
    model.train()
    if args.grad_ckpt:
        model.gradient_checkpointing_enable()
    batch = make_batch(model.config.vocab_size, args.batch, args.seq, device)
    k = args.batch // 2
    bc = {key: v[:k] for key, v in batch.items()}
    bu = {key: v[k:] for key, v in batch.items()}

    def step():
        if args.variant == "ntp":
            loss = model(**batch).loss
        elif args.variant == "sftmix":
            loss = sftmix_loss(model, bc, bu, lam=0.3, mu=0.2, chunk_tokens=args.chunk_tokens).loss
        else:
            loss = full_logits_sftmix(model, bc, bu, 0.3, 0.2)
        loss.backward()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    tokens = int(batch["attention_mask"].sum())
    return {
        "variant": args.variant,
        "step_s": statistics.median(times),
        "peak_mib": peak,
        "tokens": tokens,
        "vocab": model.config.vocab_size,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), help="random model of a real shape (default: SmolLM2-135M)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=8, help="rows (half confident, half unconfident)")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--chunk-tokens", type=int, help="LM-head chunk (default: the loss's vocabulary-based choice)")
    p.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing in the backbone")
    p.add_argument("--variant", choices=["ntp", "sftmix", "sftmix_full"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    results = {}
    for v in ("ntp", "sftmix", "sftmix_full"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", v]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            results[v] = None
            print(f"{v}: failed ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})")
            continue
        results[v] = json.loads(out.stdout.strip().splitlines()[-1])
    r0 = next(r for r in results.values() if r)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, device={args.device} "
        f"dtype={args.dtype} torch={torch.__version__}"
    )
    print(
        f"model: {args.shape or 'SmolLM2-135M'} ({r0['params'] / 1e6:.0f}M params, vocab {r0['vocab']}); "
        f"batch {args.batch} x {args.seq} ({r0['tokens']} real tokens)"
    )
    for v, r in results.items():
        if r:
            print(f"{v:12s} step {r['step_s'] * 1000:9.1f} ms   peak {r['peak_mib']:9.0f} MiB")
    n, s, f = results.get("ntp"), results.get("sftmix"), results.get("sftmix_full")
    if n and s:
        print(
            f"SFTMix / NTP: step time {s['step_s'] / n['step_s']:.3f}x, "
            f"peak memory {s['peak_mib'] / n['peak_mib']:.3f}x"
        )
    if s and f:
        print(
            f"full-logits SFTMix / chunked SFTMix: peak memory {f['peak_mib'] / s['peak_mib']:.2f}x, "
            f"step time {f['step_s'] / s['step_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
