"""sftmix trainer plugin: Mixup-regularized SFT of a target model from a confidence table.

Reads profiles only through :func:`profiler.open_table` and renders data with :mod:`profiler.data`.
"""

from trainer_plugin.config import SFTMixConfig, SFTMixTrainingArguments
from trainer_plugin.loss import SFTMixOutput, sftmix_loss
from trainer_plugin.sampler import PairedSampler

__all__ = [
    "PairedSampler",
    "SFTMixConfig",
    "SFTMixMixin",
    "SFTMixOutput",
    "SFTMixTrainer",
    "SFTMixTrainingArguments",
    "sftmix_loss",
]


def __getattr__(name: str):
    # The Trainer classes import transformers' Trainer, which is slow: load them on first use.
    if name in ("SFTMixMixin", "SFTMixTrainer"):
        from trainer_plugin import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
