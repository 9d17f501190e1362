"""Does SFTMix help? NTP vs SFTMix on the same profile, identical but for the Mixup term.

Holds out a seeded share of the profile's examples, trains the target twice on the rest (``--no-mixup``
and ``--mixup``, same seed, same paired batches), and after every epoch measures the mean response NLL of
the held-out examples. Prints one row per epoch; report what comes out, whichever way.

    python benchmarks/compare_ntp_sftmix.py --profile demo_run/run.duckdb --epochs 2
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import torch
from transformers import TrainerCallback

from profiler import open_table
from profiler.assets import smollm2_checkpoint
from profiler.data import Renderer
from profiler.data.formats import Example
from profiler.scoring import ScoreItem, TorchScorer
from trainer_plugin import SFTMixTrainingArguments
from trainer_plugin.train import build_trainer


class HeldOut(TrainerCallback):
    """Mean response NLL (token-weighted) of the held-out examples after each epoch."""

    def __init__(self, items, pad_token_id):
        self.items, self.pad, self.history = items, pad_token_id, []

    def on_epoch_end(self, args, state, control, model=None, **kw):
        was_training = model.training
        model.eval()
        scores = [s for b in TorchScorer(model, pad_token_id=self.pad).score(self.items, progress=False) for s in b]
        model.train(was_training)
        nll = sum(s.nll_sum for s in scores) / sum(s.n_tokens for s in scores)
        self.history.append((round(state.epoch), nll))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", required=True)
    p.add_argument("--model", help="target model (default: the packaged SmolLM2-135M-Instruct)")
    p.add_argument("--held-out", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model = args.model or str(smollm2_checkpoint())

    with open_table(args.profile) as t:
        rows = t.split_examples().select("example_id", "record", "messages").rows()
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    n_eval = int(len(rows) * args.held_out)
    held, train = rows[:n_eval], rows[n_eval:]
    work = Path(tempfile.mkdtemp(prefix="sftmix_compare_"))
    train_file = work / "train.jsonl"
    train_file.write_text("".join(r[1] + "\n" for r in train), encoding="utf-8")

    results = {}
    for mixup in (False, True):
        cfg = SFTMixTrainingArguments(
            model=model,
            profile=args.profile,
            output_dir=str(work / f"mixup_{mixup}"),
            data=[str(train_file)],
            mixup=mixup,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            save_strategy="no",
            logging_steps=5,
        )
        trainer = build_trainer(cfg)
        renderer = Renderer(trainer.processing_class)
        items = []
        for eid, _, msgs in held:
            r = renderer.render(Example(json.loads(msgs)))
            items.append(ScoreItem(eid, r.input_ids, r.response_mask))
        cb = HeldOut(items, trainer.processing_class.pad_token_id)
        cb.on_epoch_end(trainer.args, type("S", (), {"epoch": 0})(), None, model=trainer.model)
        trainer.add_callback(cb)
        torch.manual_seed(args.seed)
        trainer.train()
        results["SFTMix" if mixup else "NTP"] = cb.history
    print(
        f"target {model}; {len(train)} training / {len(held)} held-out examples from {args.profile}; "
        f"lr {args.learning_rate}, batch {args.batch_size}, seed {args.seed}"
    )
    print("epoch  held-out response NLL: NTP    SFTMix")
    for (e, a), (_, b) in zip(results["NTP"], results["SFTMix"]):
        print(f"{e:5d}  {a:27.4f}  {b:8.4f}")


if __name__ == "__main__":
    main()
