"""Settings of SFTMix training, apart from the code, so the CLI can build its flags without importing Trainer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SFTMixConfig:
    """The SFTMix regularizer's settings (paper defaults)."""

    mixup: bool = field(default=True, metadata={"help": "add the Mixup term; off gives the plain NTP baseline"})
    mu: float = field(default=0.2, metadata={"help": "weight of the Mixup term"})
    alpha: float = field(default=0.5, metadata={"help": "lam ~ Beta(alpha, alpha)"})
    chunk_tokens: int | None = field(
        default=None, metadata={"help": "hidden states per LM-head chunk (default: ~64M logits, 128-1024 tokens)"}
    )

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {self.chunk_tokens}")


@dataclass
class TrainConfig:
    """Target training settings. Defaults follow the SFTMix paper (AdamW, lr 2e-6, wd 0.1, cosine, warm-up 0.1)."""

    model: str = field(metadata={"help": "target model (directory or hub name)"})
    profile: str = field(metadata={"help": "the confidence table from `sftmix profile`"})
    output_dir: str = field(metadata={"help": "where checkpoints and the final model go"})
    data: list[str] = field(
        default_factory=list,
        metadata={"help": "train on this data (joined to the profile by example id) instead of the profile's copy"},
    )
    template: str = field(
        default="auto", metadata={"help": "auto, chat or alpaca", "choices": ["auto", "chat", "alpaca"]}
    )
    max_length: int = field(default=2048, metadata={"help": "longer examples are truncated"})
    mixup: bool = field(default=True, metadata={"help": "the Mixup term (--no-mixup: plain NTP baseline)"})
    mu: float = field(default=0.2, metadata={"help": "weight of the Mixup term"})
    alpha: float = field(default=0.5, metadata={"help": "lam ~ Beta(alpha, alpha)"})
    epochs: float = field(default=3.0, metadata={"help": "training epochs"})
    batch_size: int = field(default=8, metadata={"help": "examples per device per step (even: B/2 pairs)"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    learning_rate: float = field(default=2e-6, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of steps of linear warm-up"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "learning-rate schedule"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    seed: int = field(default=42, metadata={"help": "seed"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda (accelerate/torchrun pick GPUs)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward"})
    logging_steps: int = field(default=10, metadata={"help": "log every N steps"})
    save_strategy: str = field(default="epoch", metadata={"help": "no, epoch or steps"})

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2 (it holds B/2 pairs), got {self.batch_size}")
        SFTMixConfig(mixup=self.mixup, mu=self.mu, alpha=self.alpha)  # validates mu and alpha
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.epochs <= 0 or self.grad_accum < 1:
            raise ValueError("epochs must be > 0 and grad_accum >= 1")
