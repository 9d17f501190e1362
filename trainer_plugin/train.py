"""`sftmix train`: SFTMix training of a target model from a profile, with the paper's defaults.

Everything that can be wrong with the input is checked before the model loads: the options (when they are
parsed), the profile and the data (rendered with the target's tokenizer), the eval set's splits, and a
checkpoint to resume from (it must come from a run of the same settings).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from profiler.errors import ModelError, SftmixError
from profiler.hf import load_tokenizer, load_trainable_lm, resolve_model
from trainer_plugin.config import SFTMixTrainingArguments
from trainer_plugin.data import PairCollator, TrainingSet, hold_out, load_training_set, select, split_counts
from trainer_plugin.trainer import SFTMixTrainer, read_state, resolve_checkpoint

log = logging.getLogger(__name__)

HELDOUT_FILE = "heldout_ids.json"
CONFIG_FILE = "sftmix_train_config.json"


@dataclass
class PreparedData:
    """The rendered training and evaluation examples (``datasets.Dataset`` views of the cache, or None for no eval
    set), and what happened to the profile's examples."""

    train: object
    eval: object | None
    source: TrainingSet


def _training_sets(args: SFTMixTrainingArguments, tokenizer) -> tuple[TrainingSet, TrainingSet | None]:
    """The training (and ``--eval_data``) sets, rendered once for every rank: the main process builds the cache
    while the others wait, then they map it (the cache's lock would serialize them anyway)."""
    kw = dict(
        template=args.template,
        max_length=args.max_length,
        cache_dir=args.data_cache_dir,
        num_proc=args.dataset_num_proc,
    )
    with args.main_process_first(local=False, desc="rendering the training data"):
        data = load_training_set(args.profile, tokenizer, data=args.data or None, **kw)
        extra = load_training_set(args.profile, tokenizer, data=args.eval_data, **kw) if args.eval_data else None
    return data, extra


def prepare_data(args: SFTMixTrainingArguments, tokenizer) -> PreparedData:
    """Training examples, and the eval examples held out of them (``--eval_fraction``) or joined from
    ``--eval_data``."""
    data, extra = _training_sets(args, tokenizer)
    rows, eval_rows = data.dataset, None
    if args.eval_fraction is not None:
        rows, eval_rows = hold_out(rows, args.eval_fraction, args.eval_seed)
    elif extra is not None:
        eval_rows = extra.dataset
        held = set(eval_rows["example_id"])
        rows = select(rows, [e not in held for e in rows["example_id"]])
        n_both = len(data.dataset) - len(rows)
        log.info("%d of the eval examples are also training examples: held out of training", n_both)
    train_counts = split_counts(rows)
    if not all(train_counts.values()):
        raise SftmixError(
            f"{args.profile}: training needs examples in both splits, got {train_counts['confident']} confident "
            f"and {train_counts['unconfident']} unconfident"
            + (" after holding out the eval set" if eval_rows is not None else "")
        )
    if eval_rows is not None:
        eval_counts = split_counts(eval_rows)
        empty = [name for name, n in eval_counts.items() if not n]
        if empty:
            where = f"--eval_data {' '.join(args.eval_data)}" if args.eval_data else "the eval set"
            raise SftmixError(f"{where}: no {empty[0]} examples; per-split eval losses need both splits")
    return PreparedData(rows, eval_rows, data)


def check_resume(args: SFTMixTrainingArguments) -> str | None:
    """The checkpoint to resume from, after checking it was written by a run of the same settings."""
    try:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    except FileNotFoundError as e:
        raise SftmixError(str(e)) from e
    if checkpoint is None:
        return None
    saved = read_state(checkpoint).get("settings")
    if saved is None:
        raise SftmixError(f"--resume_from_checkpoint {checkpoint}: not written by `sftmix train` (no settings saved)")
    now = args.resume_settings()
    differ = [k for k in now if k in saved and saved[k] != now[k]]
    if differ:
        diffs = ", ".join(f"--{k} {saved[k]!r} there, {now[k]!r} now" for k in differ)
        raise SftmixError(f"--resume_from_checkpoint {checkpoint}: written by a run of other settings ({diffs})")
    return checkpoint


def load_target(args: SFTMixTrainingArguments, tokenizer):
    """The target model, in ``--dtype`` with ``--attn_implementation``, LoRA-wrapped with ``--lora``.

    Seeded by ``--seed`` first, as Hugging Face's example scripts do before building the model: the LoRA matrices
    (and any weights the checkpoint lacks) are drawn here, before Trainer seeds anything, and would otherwise depend
    on whatever consumed the global generator before (another run in the same process, for one)."""
    from transformers.trainer_utils import enable_full_determinism, set_seed

    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)
    model = load_trainable_lm(
        args.model,
        dtype="auto" if args.dtype == "auto" else getattr(torch, args.dtype),
        attn_implementation=args.attn_implementation or None,
        lora_r=args.lora_r if args.lora else None,
        role="target model",
    )
    if model.get_output_embeddings() is None:
        raise ModelError(f"{type(model).__name__} has no accessible LM head; SFTMix mixes its inputs")
    return model


def build_trainer(args: SFTMixTrainingArguments, **trainer_kwargs) -> SFTMixTrainer:
    """Everything checked and loaded, nothing trained yet (the held-out ids are already saved)."""
    with args.main_process_first(local=False, desc="preparing the packaged model"):
        args.model = resolve_model(args.model)  # the packaged model's name -> its converted checkpoint
    tokenizer = load_tokenizer(args.model)
    data = prepare_data(args, tokenizer)
    check_resume(args)
    if data.eval is not None and args.process_index == 0:
        save_heldout(args, data.eval)
    model = load_target(args, tokenizer)
    log.info(
        "training on %d examples (%s; %d truncated, %d dropped), evaluating on %d",
        len(data.train),
        ", ".join(f"{n} {k}" for k, n in split_counts(data.train).items()),
        data.source.n_truncated,
        data.source.n_dropped,
        len(data.eval) if data.eval is not None else 0,
    )
    return SFTMixTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=PairCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        sftmix=args.sftmix,
        **trainer_kwargs,
    )


def save_heldout(args: SFTMixTrainingArguments, rows) -> Path:
    """The eval set's example ids, beside the model, so a later comparison evaluates the same examples."""
    out = Path(args.output_dir, HELDOUT_FILE)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "profile": args.profile,
        "eval_fraction": args.eval_fraction,
        "eval_seed": args.eval_seed if args.eval_fraction is not None else None,
        "eval_data": args.eval_data,
        "counts": split_counts(rows),
        "example_ids": sorted(rows["example_id"]),
    }
    out.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return out


def run_train(args: SFTMixTrainingArguments) -> str:
    """Train the target model, save it (or its adapter) to ``output_dir``, and evaluate it on the eval set."""
    trainer = build_trainer(args)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    trainer.save_state()  # trainer_state.json: the log history beside the model
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
    if args.process_index == 0:
        Path(args.output_dir, CONFIG_FILE).write_text(args.to_json_string(), encoding="utf-8")
    return args.output_dir
