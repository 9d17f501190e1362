"""Settings of SFTMix training.

:class:`SFTMixConfig` holds the regularizer's settings (for :class:`trainer_plugin.SFTMixMixin`, e.g. mixed into
TRL's ``SFTTrainer``). :class:`SFTMixTrainingArguments` is what `sftmix train` parses: every
``transformers.TrainingArguments`` field (``--bf16``, ``--max_steps``, ``--eval_strategy``, ``--report_to``,
``--deepspeed``, ``--fsdp`` ...) plus the model, data, evaluation and SFTMix options, with the paper's defaults
(AdamW, lr 2e-6, weight decay 0.1, cosine, warm-up 0.1, 3 epochs, mu 0.2, alpha 0.5). Each option is declared once,
with its rule, and checked before any model loads.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from transformers import TrainingArguments

from profiler.data.render import TEMPLATES
from profiler.hf import PACKAGED_MODEL
from profiler.options import LR_SCHEDULERS, OptionError, as_list, check_options, option

# The model's parameter dtype at load (--dtype). float32 keeps float32 master weights under --bf16 autocast.
MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")

# Settings a resumed run must share with the checkpoint it resumes from (the others, e.g. logging, may change).
RESUME_KEYS = (
    "model",
    "profile",
    "data",
    "template",
    "max_length",
    "eval_fraction",
    "eval_seed",
    "eval_data",
    "mixup",
    "group_by_length_pairs",
    "mu",
    "alpha",
    "lora",
    "lora_r",
    "dtype",
    "seed",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "optim",
)

# --report_to names and the module each needs (transformers only warns about a missing one, after the model loads).
REPORT_MODULES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",),
    "clearml": ("clearml",),
    "neptune": ("neptune",),
    "dvclive": ("dvclive",),
    "trackio": ("trackio",),
    "swanlab": ("swanlab",),
    "codecarbon": ("codecarbon",),
    "azure_ml": ("azureml",),
    "dagshub": ("dagshub",),
    "flyte": ("flytekit",),
}


def _even_pairs(b: int) -> bool:
    return b >= 2 and b % 2 == 0


@dataclass
class SFTMixConfig:
    """The SFTMix regularizer's settings (paper defaults)."""

    mixup: bool = option(True, "add the Mixup term; --no-mixup gives the plain NTP baseline")
    mu: float = option(0.2, "weight of the Mixup term", ge=0)
    alpha: float = option(0.5, "lam ~ Beta(alpha, alpha)", gt=0)
    chunk_tokens: int | None = option(
        None, "hidden states per LM-head chunk (default: ~64M logits, 128-1024 tokens)", ge=1
    )
    group_by_length_pairs: bool = option(
        True,
        "batches gather pairs of similar length (the same random pairs, less padding); false: the pairs in the "
        "order they were drawn",
    )
    padding_free: bool | None = option(
        None,
        "run each batch's real tokens packed into one row, no padding computed (default: on under flash "
        "attention, whose kernel takes packed rows; sdpa and eager give the same loss at no saving)",
    )

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(kw_only=True)
class SFTMixTrainingArguments(SFTMixConfig, TrainingArguments):
    """`sftmix train`'s arguments: ``TrainingArguments`` with the paper's defaults, and the SFTMix, model, data and
    evaluation options. Flags are spelled ``--max_steps`` or ``--max-steps``; YAML keys as the field names."""

    # `sftmix train --help`: these headings first, in this order, then every other TrainingArguments field.
    help_groups: ClassVar[dict[str, tuple[str, ...]]] = {
        "model and data": (
            "model",
            "profile",
            "output_dir",
            "data",
            "template",
            "max_length",
            "data_cache_dir",
            "dataset_num_proc",
            "dtype",
            "attn_implementation",
            "lora",
            "lora_r",
        ),
        "SFTMix": ("mixup", "mu", "alpha", "chunk_tokens", "group_by_length_pairs", "padding_free"),
        "evaluation": ("eval_fraction", "eval_data", "eval_seed", "eval_strategy"),
        "training (the paper's defaults, and the TrainingArguments used most)": (
            "num_train_epochs",
            "max_steps",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "learning_rate",
            "weight_decay",
            "lr_scheduler_type",
            "warmup_steps",
            "seed",
            "bf16",
            "logging_steps",
            "save_strategy",
            "save_steps",
            "save_total_limit",
            "resume_from_checkpoint",
            "report_to",
            "remove_unused_columns",
        ),
    }
    help_rest: ClassVar[str] = "other TrainingArguments (transformers)"

    # --- model and data ---------------------------------------------------------------------------------------------
    model: str = option(
        help=f"target model (directory or hub name; {PACKAGED_MODEL}: the demo's packaged model)",
        aliases=("--model_name_or_path",),
    )
    profile: str = option(help="the confidence table from `sftmix profile`")
    output_dir: str = option(help="where checkpoints, the held-out ids and the final model go")
    data: list[str] = option(
        default_factory=list,
        help="train on this data (joined to the profile by example id) instead of the profile's copy",
    )
    template: str = option("auto", "auto (chat template if any), chat or alpaca", choices=TEMPLATES)
    max_length: int = option(2048, "longer examples are truncated", ge=2)
    data_cache_dir: str | None = option(
        None, "folder of the rendered training data, built once for all ranks (default: PROFILE_data beside it)"
    )
    dataset_num_proc: int | None = option(None, "processes rendering the training data (default: one per CPU)", ge=1)
    dtype: str = option(
        "float32",
        "parameter dtype at load: float32 keeps float32 master weights (use --bf16 for bf16 compute), bfloat16 "
        "loads the model in bf16 (half the memory, no float32 master copy)",
        choices=MODEL_DTYPES,
    )
    attn_implementation: str | None = option(
        None, "attention kernel: eager, sdpa, flash_attention_2, flex_attention ... (default: the model's)"
    )
    lora: bool = option(False, "train a LoRA adapter instead of all weights")
    lora_r: int = option(16, "LoRA rank", ge=1)
    # --- evaluation -------------------------------------------------------------------------------------------------
    eval_fraction: float | None = option(
        None, "hold out this fraction of the profile, stratified by split, for evaluation", gt=0, le=0.5
    )
    eval_data: list[str] = option(
        default_factory=list, help="evaluate on this data (joined to the profile by example id; not trained on)"
    )
    eval_seed: int = option(
        0, "seed of the --eval_fraction draw (apart from --seed: every seed holds out the same)", ge=0
    )
    # --- TrainingArguments with the paper's defaults ----------------------------------------------------------------
    num_train_epochs: float = option(3.0, "training epochs", gt=0, aliases=("--epochs",))
    per_device_train_batch_size: int = option(
        8,
        "examples per device per step: B/2 confident + B/2 unconfident, paired",
        check=_even_pairs,
        describe="an even integer >= 2 (it holds B/2 pairs)",
        aliases=("--batch-size", "--batch_size"),
    )
    gradient_accumulation_steps: int = option(
        1, "micro-batches per optimizer step", ge=1, aliases=("--grad-accum", "--grad_accum")
    )
    learning_rate: float = option(2e-6, "peak learning rate (AdamW)", gt=0)
    weight_decay: float = option(0.1, "AdamW weight decay", ge=0)
    lr_scheduler_type: str = option(
        "cosine", "learning-rate schedule", choices=LR_SCHEDULERS, aliases=("--lr-scheduler", "--lr_scheduler")
    )
    warmup_steps: float = option(
        0.1,
        "linear warm-up: a fraction of the steps when below 1, else a number of steps",
        ge=0,
        aliases=("--warmup-ratio", "--warmup_ratio"),
    )
    logging_steps: float = option(10, "log every N steps (a fraction below 1: of the steps)", gt=0)
    save_strategy: str = option("epoch", "when to save checkpoints", choices=("no", "epoch", "steps", "best"))
    eval_strategy: str = option(
        "no", "when to evaluate (an eval set is also evaluated after training)", choices=("no", "steps", "epoch")
    )
    remove_unused_columns: bool = option(False, "kept off: the paired batches need the split column")

    def __post_init__(self) -> None:
        self.data = [str(d) for d in as_list(self.data)]
        self.eval_data = [str(d) for d in as_list(self.eval_data)]
        check_options(self)
        self._check_combinations()
        TrainingArguments.__post_init__(self)

    def _check_combinations(self) -> None:
        """Rules across options, checked before TrainingArguments' own (and long before any model loads)."""
        if self.eval_fraction is not None and self.eval_data:
            raise OptionError("--eval_fraction and --eval_data: give one or the other")
        if self.eval_strategy != "no" and self.eval_fraction is None and not self.eval_data:
            raise OptionError(
                f"--eval_strategy {self.eval_strategy}: needs an eval set (--eval_fraction or --eval_data)"
            )
        if self.remove_unused_columns:
            raise OptionError("--remove_unused_columns true: the paired batches need the split column; leave it off")
        for name in [r for r in as_list(self.report_to) if r not in ("none", "all")]:
            modules = REPORT_MODULES.get(name)
            if modules is not None and not any(importlib.util.find_spec(m) for m in modules):
                raise OptionError(f"--report_to {name}: {modules[0]} is not installed (pip install {modules[0]})")
        if not Path(self.profile).is_file():
            raise OptionError(f"--profile {self.profile}: no such file (make one with `sftmix profile`)")

    @property
    def sftmix(self) -> SFTMixConfig:
        """The regularizer's settings, for :class:`trainer_plugin.SFTMixMixin`."""
        return SFTMixConfig(
            mixup=self.mixup,
            mu=self.mu,
            alpha=self.alpha,
            chunk_tokens=self.chunk_tokens,
            group_by_length_pairs=self.group_by_length_pairs,
            padding_free=self.padding_free,
        )

    def resume_settings(self) -> dict:
        """The settings a checkpoint records and a resumed run must repeat (see :data:`RESUME_KEYS`)."""
        out = {}
        for key in RESUME_KEYS:
            value = getattr(self, key)
            out[key] = getattr(value, "value", value)  # enums (lr_scheduler_type, optim) as their strings
        return out
