"""Settings of SFTMix training, apart from the code, so the CLI can build its flags without importing Trainer."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.options import DEVICE_PATTERN, DEVICE_TEXT, LR_SCHEDULERS, as_list, check_options, option


@dataclass
class SFTMixConfig:
    """The SFTMix regularizer's settings (paper defaults)."""

    mixup: bool = option(True, "add the Mixup term; off gives the plain NTP baseline")
    mu: float = option(0.2, "weight of the Mixup term", ge=0)
    alpha: float = option(0.5, "lam ~ Beta(alpha, alpha)", gt=0)
    chunk_tokens: int | None = option(
        None, "hidden states per LM-head chunk (default: ~64M logits, 128-1024 tokens)", ge=1
    )

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class TrainConfig:
    """Target training settings. Defaults follow the SFTMix paper (AdamW, lr 2e-6, wd 0.1, cosine, warm-up 0.1)."""

    model: str = option(help="target model (directory or hub name)")
    profile: str = option(help="the confidence table from `sftmix profile`")
    output_dir: str = option(help="where checkpoints and the final model go")
    data: list[str] = option(
        default_factory=list,
        help="train on this data (joined to the profile by example id) instead of the profile's copy",
    )
    template: str = option("auto", "auto, chat or alpaca", choices=("auto", "chat", "alpaca"))
    max_length: int = option(2048, "longer examples are truncated", ge=2)
    mixup: bool = option(True, "the Mixup term (--no-mixup: plain NTP baseline)")
    mu: float = option(0.2, "weight of the Mixup term", ge=0)
    alpha: float = option(0.5, "lam ~ Beta(alpha, alpha)", gt=0)
    epochs: float = option(3.0, "training epochs", gt=0)
    batch_size: int = option(
        8,
        "examples per device per step (even: B/2 pairs)",
        check=lambda b: b >= 2 and b % 2 == 0,
        describe="an even integer >= 2 (it holds B/2 pairs)",
    )
    grad_accum: int = option(1, "gradient accumulation steps", ge=1)
    learning_rate: float = option(2e-6, "peak learning rate", gt=0)
    weight_decay: float = option(0.1, "AdamW weight decay", ge=0)
    warmup_ratio: float = option(0.1, "fraction of steps of linear warm-up", ge=0, lt=1)
    lr_scheduler: str = option("cosine", "learning-rate schedule", choices=LR_SCHEDULERS)
    lora: bool = option(False, "train a LoRA adapter")
    lora_r: int = option(16, "LoRA rank", ge=1)
    seed: int = option(42, "seed", ge=0)
    device: str = option(
        "auto", "where to train (accelerate/torchrun pick GPUs)", pattern=DEVICE_PATTERN, describe=DEVICE_TEXT
    )
    gradient_checkpointing: bool = option(False, "recompute activations in backward")
    logging_steps: int = option(10, "log every N steps", ge=1)
    save_strategy: str = option("epoch", "no, epoch or steps", choices=("no", "epoch", "steps"))

    def __post_init__(self) -> None:
        self.data = [str(d) for d in as_list(self.data)]
        check_options(self)
