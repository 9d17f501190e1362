"""Padding in `sftmix train`'s batches, and what SFTMix costs over NTP, on Tulu-like lengths.

N synthetic Tulu-like chat examples (``tulu_like.py``: heavy-tailed, ~564 SmolLM2 tokens each) are rendered for the
target as `sftmix train` renders them (``trainer_plugin.data.render_training_batch``, SmolLM2's tokenizer and chat
template, ``max_length`` 2048), half of them marked confident at random (a profile's split is what decides it in a
real run; the lengths do not depend on it). On that dataset:

1. Padding: one epoch of the trainer's own training dataloader (``SFTMixTrainer.get_train_dataloader``: the paired
   sampler, ``PairCollator``, accelerate's wrapper) at batch B, in the pairs' drawn order (``group_by_length_pairs
   false``, the order before length grouping) and length-grouped (the default): computed positions (padding
   included) per real token. Beside them, for reference: the floor any batching of these random pairs has (each row
   padded to its partner's length: ``2 * sum(max(len_c, len_u))``), and plain NTP batches of B examples in random
   order and with transformers' ``group_by_length`` (``LengthGroupedSampler``).
2. Speed: short training runs (``--steps`` optimizer steps) of a tiny random Llama (hidden 64, 2 layers, SmolLM2's
   vocabulary, as the tests build tiny models) with SFTMix and with NTP (``mixup`` off), the same batches for both,
   alternated ``--repeats`` times; real tokens per second of training steps, and the ratio. At this size the LM head
   (run on the real response tokens only) outweighs the backbone, so padding costs little time here; the padding
   figures above are what scales to a real target.

Everything runs in one process, on the CPU, in well under 5 minutes on 2 cores with the defaults:

    python benchmarks/bench_padding.py
    python benchmarks/bench_padding.py --n 1200 --batch 8 --steps 3 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # tulu_like imports workload from here


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def rendered_dataset(n: int, seed: int, workdir: Path, tokenizer, max_length: int):
    """N Tulu-like examples rendered for the target as `sftmix train` renders them, half confident at random."""
    import numpy as np
    from datasets import Dataset
    from tulu_like import write_tulu_like

    from profiler.data.render import Renderer
    from trainer_plugin.data import _features, render_training_batch

    path = write_tulu_like(workdir / "tulu_like.jsonl", n, seed=seed)
    rng = np.random.default_rng(seed)
    lines = path.read_text(encoding="utf-8").splitlines()
    raw = Dataset.from_dict(
        {
            "example_id": [f"ex{i}" for i in range(len(lines))],
            "messages": [json.dumps(json.loads(line)["messages"]) for line in lines],
            "split": np.where(rng.random(len(lines)) < 0.5, "confident", "unconfident").tolist(),
        }
    )
    renderer = Renderer(tokenizer, "auto", max_length, truncate=True)
    return raw.map(
        render_training_batch,
        batched=True,
        fn_kwargs={"renderer": renderer},
        features=_features(),
        remove_columns=raw.column_names,
    )


def tiny_llama(tokenizer, seed: int = 0):
    """A random 2-layer Llama (hidden 64, head_dim 32) on the tokenizer's vocabulary (tests/conftest.py's shape)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def make_trainer(dataset, tokenizer, out: Path, *, batch: int, steps: int, grouped: bool, mixup: bool, seed: int):
    """An SFTMixTrainer built as ``trainer_plugin.train.build_trainer`` builds it (model, args, dataset, collator)."""
    from transformers import TrainingArguments

    from trainer_plugin import SFTMixConfig, SFTMixTrainer
    from trainer_plugin.data import PairCollator

    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=1e-3,
        logging_steps=steps,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        remove_unused_columns=False,
        seed=seed,
        disable_tqdm=True,
    )
    return SFTMixTrainer(
        model=tiny_llama(tokenizer),
        args=args,
        train_dataset=dataset,
        data_collator=PairCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        sftmix=SFTMixConfig(mixup=mixup, group_by_length_pairs=grouped),
    )


def epoch_padding(trainer) -> tuple[int, int, int]:
    """``(real, computed, batches)`` over one epoch of the trainer's training dataloader."""
    real = computed = n = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        computed += batch["input_ids"].numel()
        n += 1
    return real, computed, n


def ntp_padding(lengths, batch: int, grouped: bool, seed: int) -> float:
    """Computed positions per real token of plain NTP batches of ``batch`` examples (one epoch)."""
    import numpy as np
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    g = torch.Generator().manual_seed(seed)
    if grouped:
        order = list(LengthGroupedSampler(batch, lengths=lengths.tolist(), generator=g))
    else:
        order = torch.randperm(len(lengths), generator=g).tolist()
    rows = lengths[np.array(order)]
    padded = sum(int(rows[i : i + batch].max()) * len(rows[i : i + batch]) for i in range(0, len(rows), batch))
    return padded / int(rows.sum())


def timed_run(dataset, tokenizer, out: Path, *, batch: int, steps: int, grouped: bool, mixup: bool, seed: int):
    """Real tokens per second of training steps (the trainer's own ``tokens_per_second_per_device``, wall clock),
    per CPU second of the whole ``train()`` (this process's CPU time: steadier than the wall clock on a shared
    machine), and the real and computed tokens the run trained on."""
    from transformers import PrinterCallback

    trainer = make_trainer(dataset, tokenizer, out, batch=batch, steps=steps, grouped=grouped, mixup=mixup, seed=seed)
    trainer.remove_callback(PrinterCallback)
    cpu = time.process_time()
    trainer.train()
    cpu = time.process_time() - cpu
    log = next(h for h in trainer.state.log_history if "tokens_per_second_per_device" in h)
    return {
        "tok_s": log["tokens_per_second_per_device"],
        "cpu_tok_s": log["tokens_real"] / cpu,
        "real": log["tokens_real"],
        "padded": log["tokens_padded"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1200, help="Tulu-like examples (default 1200)")
    p.add_argument("--batch", type=int, default=8, help="per-device batch: B/2 pairs (default 8)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per timed run (default 3)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each, alternated (default 2)")
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="default: a temporary folder")
    args = p.parse_args()

    import numpy as np
    import torch
    import transformers

    from profiler.assets import smollm2_checkpoint
    from profiler.hf import load_tokenizer
    from trainer_plugin.trainer import example_lengths

    transformers.logging.set_verbosity_error()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        tokenizer = load_tokenizer(str(smollm2_checkpoint()))
        dataset = rendered_dataset(args.n, args.seed, work, tokenizer, args.max_length)
        lengths = example_lengths(dataset)
        print(f"date: {date.today()}; command: python {' '.join(sys.argv)}")
        print(
            f"machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), transformers {transformers.__version__}"
        )
        n_conf = sum(dataset["confident"])
        print(
            f"data: {len(dataset):,} Tulu-like examples ({n_conf} confident, {len(dataset) - n_conf} unconfident), "
            f"SmolLM2 tokens: mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
            f"p99 {np.percentile(lengths, 99):.0f}, max {lengths.max()}; batch {args.batch} "
            f"({args.batch // 2} pairs)\n"
        )

        # --- 1. padding over one epoch of the trainer's dataloader -----------------------------------------------
        print(f"| one epoch at batch {args.batch} | computed positions per real token | padding share |")
        print("|---|---|---|")
        ratios = {}
        for grouped in (False, True):
            trainer = make_trainer(
                dataset, tokenizer, work / "pad", batch=args.batch, steps=1, grouped=grouped, mixup=True, seed=args.seed
            )
            real, computed, n_batches = epoch_padding(trainer)
            ratios[grouped] = computed / real
            name = "SFTMix, length-grouped pairs (default)" if grouped else "SFTMix, pairs in drawn order (before)"
            print(f"| {name}, {n_batches} batches | {computed / real:.3f} | {1 - real / computed:.1%} |")
        sampler = trainer._get_train_sampler()
        pairs = sampler.pairs(0)
        floor = 2 * lengths[pairs].max(axis=1).sum() / lengths[pairs].sum()
        print(f"| SFTMix floor of these random pairs: 2 sum max(len_c, len_u) | {floor:.3f} | {1 - 1 / floor:.1%} |")
        for grouped in (False, True):
            r = ntp_padding(lengths, args.batch, grouped, args.seed)
            name = "NTP, transformers group_by_length" if grouped else "NTP, random order"
            print(f"| {name} | {r:.3f} | {1 - 1 / r:.1%} |")
        print(
            f"\ngrouping: {ratios[False] / ratios[True]:.2f}x fewer computed positions per epoch; "
            f"{ratios[True] / floor - 1:.1%} above the pairs' floor (windows of {sampler.window} optimizer steps of "
            f"{sampler.pairs_per_step} pairs)\n"
        )

        # --- 2. SFTMix vs NTP tokens/s, the same batches, alternated ------------------------------------------------
        runs: dict[str, list[dict]] = {"SFTMix": [], "NTP": []}
        for _ in range(args.repeats):
            for name, mixup in (("SFTMix", True), ("NTP", False)):
                runs[name].append(
                    timed_run(
                        dataset,
                        tokenizer,
                        work / name,
                        batch=args.batch,
                        steps=args.steps,
                        grouped=True,
                        mixup=mixup,
                        seed=args.seed,
                    )
                )
        first = runs["SFTMix"][0]
        print(
            f"| {args.steps} steps, length-grouped (the epoch's first {args.steps} batches: {first['real']:,} real "
            f"tokens, {first['padded']:,} computed) | real tokens/s of training steps, wall (runs) | median | "
            f"real tokens per CPU second of train() (runs) | median |"
        )
        print("|---|---|---|---|---|")
        wall, cpu = {}, {}
        for name, rs in runs.items():
            wall[name] = statistics.median(r["tok_s"] for r in rs)
            cpu[name] = statistics.median(r["cpu_tok_s"] for r in rs)
            each = " / ".join(f"{r['tok_s']:,.0f}" for r in rs)
            each_cpu = " / ".join(f"{r['cpu_tok_s']:,.0f}" for r in rs)
            label = f"{name}{' (mixup off)' if name == 'NTP' else ''}"
            print(f"| {label} | {each} | {wall[name]:,.0f} | {each_cpu} | {cpu[name]:,.0f} |")
        print(
            f"\nSFTMix / NTP tokens/s: {wall['SFTMix'] / wall['NTP']:.2f} wall, {cpu['SFTMix'] / cpu['NTP']:.2f} "
            f"per CPU second (SFTMix takes {wall['NTP'] / wall['SFTMix']:.2f}x / {cpu['NTP'] / cpu['SFTMix']:.2f}x "
            f"the time of NTP per real token)"
        )
    print(f"total: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
