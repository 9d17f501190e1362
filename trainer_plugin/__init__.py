"""sftmix trainer plugin: Mixup-regularized SFT of a target model from a confidence table.

Reads profiles only through :func:`profiler.open_table` and renders data with :mod:`profiler.data`.
"""

from trainer_plugin.loss import SFTMixOutput, sftmix_loss

__all__ = ["SFTMixOutput", "sftmix_loss"]
