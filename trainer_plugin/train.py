"""`sftmix train`: SFTMix training of a target model from a profile, with the paper's defaults."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from profiler.errors import ModelError, SftmixError
from profiler.hf import warmup_args
from trainer_plugin.config import SFTMixConfig, TrainConfig
from trainer_plugin.data import PairCollator, SplitDataset, load_training_set
from trainer_plugin.trainer import SFTMixTrainer

log = logging.getLogger(__name__)


def _load_target(cfg: TrainConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(cfg.model).exists() and cfg.model.count("/") != 1:
        raise ModelError(f"model path does not exist: {cfg.model}")
    try:
        tok = AutoTokenizer.from_pretrained(cfg.model)
        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    except Exception as e:
        raise ModelError(f"cannot load the target model {cfg.model}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model.get_output_embeddings() is None:
        raise ModelError(f"{type(model).__name__} has no accessible LM head; SFTMix mixes its inputs")
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
    return tok, model


def build_trainer(cfg: TrainConfig, **trainer_kwargs) -> SFTMixTrainer:
    """Everything checked and loaded, nothing trained yet."""
    from transformers import TrainingArguments

    tok, model = _load_target(cfg)
    data = load_training_set(cfg.profile, tok, data=cfg.data or None, template=cfg.template, max_length=cfg.max_length)
    if not data.confident or not data.unconfident:
        raise SftmixError(
            f"{cfg.profile}: need examples in both splits, got {len(data.confident)} confident and "
            f"{len(data.unconfident)} unconfident"
        )
    on_gpu = torch.cuda.is_available() and cfg.device != "cpu"
    args = TrainingArguments(
        output_dir=cfg.output_dir,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        optim="adamw_torch",
        **warmup_args(TrainingArguments, cfg.warmup_ratio),
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        use_cpu=not on_gpu,
        logging_steps=cfg.logging_steps,
        save_strategy=cfg.save_strategy,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    sftmix = SFTMixConfig(mixup=cfg.mixup, mu=cfg.mu, alpha=cfg.alpha)
    log.info(
        "training on %d examples (%d confident, %d unconfident; %d truncated, %d dropped)",
        len(data.rows),
        len(data.confident),
        len(data.unconfident),
        data.n_truncated,
        data.n_dropped,
    )
    return SFTMixTrainer(
        model=model,
        args=args,
        train_dataset=SplitDataset(data.rows),
        data_collator=PairCollator(tok.pad_token_id),
        processing_class=tok,
        sftmix=sftmix,
        **trainer_kwargs,
    )


def run_train(cfg: TrainConfig) -> str:
    """Train the target model and save it (or its adapter) to ``output_dir``."""
    trainer = build_trainer(cfg)
    trainer.train()
    trainer.save_model(cfg.output_dir)
    (Path(cfg.output_dir) / "sftmix_train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return cfg.output_dir
