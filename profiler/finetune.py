"""Reference fine-tuning with Hugging Face Trainer: response-only loss, C evenly spaced checkpoints, resumable.

The training data is rendered exactly as for scoring, so the checkpoints are scored on what they were
trained on. Checkpoints land in ``checkpoint-<step>`` directories; only the newest keeps its optimizer state
(enough to resume), which keeps full fine-tuning of a 2B model from needing C optimizer copies on disk.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from profiler.config import FinetuneConfig
from profiler.data.items import item_lengths
from profiler.data.render import RenderedExample, pad_batch
from profiler.errors import SftmixError
from profiler.hf import load_trainable_lm, resolve_device, warmup_args
from profiler.scoring.base import ScoreItem

log = logging.getLogger(__name__)

RESUME_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")


class _Examples(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[ScoreItem]):
        self.items = items  # a view of the rendered cache: items are read on access

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        it = self.items[i]
        mask = np.asarray(it.response_mask, dtype=bool).tolist()
        rendered = RenderedExample(np.asarray(it.input_ids).tolist(), mask)
        return {"input_ids": rendered.input_ids, "labels": rendered.labels()}


def _reference_trainer(base):
    """``Trainer`` whose length-grouped order is drawn over the global batch, from the rendered lengths.

    The mega-batches then hold the same examples whatever the number of processes (a launcher's ranks split each
    global batch), so N ranks train on the one-process order; and no example is built just to measure it.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class ReferenceTrainer(base):
        def _get_train_sampler(self, *args, **kwargs):
            a = self.args
            global_batch = a.train_batch_size * a.world_size * a.gradient_accumulation_steps
            return LengthGroupedSampler(global_batch, lengths=list(item_lengths(self.train_dataset.items)))

    return ReferenceTrainer


def collate(pad_token_id: int):
    """A data collator right-padding ``input_ids`` and ``labels``."""
    return functools.partial(pad_batch, pad_token_id=pad_token_id)


def checkpoint_steps(max_steps: int, n_checkpoints: int) -> list[int]:
    """C optimizer steps evenly spaced over the run, the last one at its end."""
    if max_steps < n_checkpoints:
        raise SftmixError(
            f"the run has only {max_steps} optimizer steps, fewer than the {n_checkpoints} checkpoints asked for; "
            "lower --n-checkpoints or --batch-size, or use more data"
        )
    return [math.ceil(max_steps * k / n_checkpoints) for k in range(1, n_checkpoints + 1)]


def saved_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``checkpoint-<step>`` directories in step order."""
    d = Path(ckpt_dir)
    dirs = [p for p in d.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()] if d.is_dir() else []
    return sorted(dirs, key=lambda p: int(p.name.split("-")[-1]))


def _callbacks(n_checkpoints: int, fail_after_checkpoints: int | None):
    from transformers import TrainerCallback

    class EvenCheckpoints(TrainerCallback):
        """Saves at C evenly spaced steps; leaves resume state only in the newest checkpoint."""

        def on_train_begin(self, args, state, control, **kw):
            self.steps = set(checkpoint_steps(state.max_steps, n_checkpoints))
            self.saved = len(saved_checkpoints(args.output_dir))
            self.log_every = max(1, min(10, state.max_steps // 20))  # short runs log every step or two

        def on_step_end(self, args, state, control, **kw):
            if state.global_step in self.steps:
                control.should_save = True
            if state.global_step % self.log_every == 0:
                control.should_log = True

        def on_save(self, args, state, control, **kw):
            for old in saved_checkpoints(args.output_dir)[:-1]:
                for name in RESUME_FILES:
                    (old / name).unlink(missing_ok=True)
            self.saved += 1
            if fail_after_checkpoints is not None and self.saved >= fail_after_checkpoints:
                raise RuntimeError(f"stopped after checkpoint {self.saved} (test hook)")

    return [EvenCheckpoints()]


def _renamed_args(cls, grad_ckpt: bool, warmup_ratio: float) -> dict:
    """Arguments that transformers 5 renamed, spelled for the installed version."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": grad_ckpt}
    # Length-grouped batches: little padding, and the order stays seeded.
    if "train_sampling_strategy" in names:
        out["train_sampling_strategy"] = "group_by_length"
    else:
        out["group_by_length"] = True
    return {**out, **warmup_args(cls, warmup_ratio)}


def estimate_disk_bytes(model, cfg: FinetuneConfig) -> int:
    """Checkpoint weights times C, plus one optimizer state (two fp32 moments per trainable parameter)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weights = trainable * next(model.parameters()).element_size()
    return weights * cfg.n_checkpoints + trainable * 8


def finetune(
    model_path: str,
    items: Sequence[ScoreItem],
    cfg: FinetuneConfig,
    ckpt_dir: str | Path,
    *,
    pad_token_id: int,
    device: str = "auto",
    progress: bool = True,
    fail_after_checkpoints: int | None = None,
) -> list[Path]:
    """Fine-tune the reference model on ``items`` and return its C checkpoint directories.

    Resumes from the newest checkpoint in ``ckpt_dir``; returns at once when all C are there.

    Args:
        fail_after_checkpoints: testing hook; raise right after saving that many checkpoints (a crash).
    """
    from transformers import Trainer, TrainingArguments

    ckpt_dir = Path(ckpt_dir)
    done = saved_checkpoints(ckpt_dir)
    if len(done) >= cfg.n_checkpoints and (ckpt_dir / "training_complete").is_file():
        return done[-cfg.n_checkpoints :]
    dev = resolve_device(device)
    on_gpu = dev.type == "cuda"
    bf16 = on_gpu and torch.cuda.is_bf16_supported()
    torch.manual_seed(cfg.seed)
    model = load_trainable_lm(
        model_path, lora_r=cfg.lora_r if cfg.lora else None, lora_alpha=cfg.lora_alpha, role="reference model"
    )
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    need, free = estimate_disk_bytes(model, cfg), shutil.disk_usage(ckpt_dir).free
    if need > free:
        raise SftmixError(
            f"not enough disk for the checkpoints at {ckpt_dir}: about {need / 2**30:.1f} GiB needed, "
            f"{free / 2**30:.1f} GiB free; use --lora, --keep-checkpoints, or --checkpoint-dir"
        )
    grad_ckpt = on_gpu if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=1.0,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=bf16,
        use_cpu=dev.type == "cpu",
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        disable_tqdm=not progress,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **_renamed_args(TrainingArguments, grad_ckpt, cfg.warmup_ratio),
    )
    trainer = _reference_trainer(Trainer)(
        model=model,
        args=args,
        train_dataset=_Examples(items),
        data_collator=collate(pad_token_id),
        callbacks=_callbacks(cfg.n_checkpoints, fail_after_checkpoints),
    )
    trainer.train(resume_from_checkpoint=str(done[-1]) if done else None)
    (ckpt_dir / "training_complete").write_text("ok\n")
    out = saved_checkpoints(ckpt_dir)
    if len(out) < cfg.n_checkpoints:
        raise SftmixError(f"training ended with {len(out)} checkpoints in {ckpt_dir}, expected {cfg.n_checkpoints}")
    for old in out:  # nothing is left to resume
        for name in RESUME_FILES:
            (old / name).unlink(missing_ok=True)
    return out[-cfg.n_checkpoints :]
