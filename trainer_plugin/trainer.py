"""SFTMixTrainer: Hugging Face Trainer with paired batches and the SFTMix loss.

:class:`SFTMixMixin` holds everything, so it can also be mixed into TRL's ``SFTTrainer`` or another
Trainer subclass: ``class MyTrainer(SFTMixMixin, SFTTrainer)``. The train dataset must say which examples
are confident: the ``SplitDataset`` of :func:`trainer_plugin.data.load_training_set`, or (TRL needs a
``datasets.Dataset``) ``Dataset.from_list(training_set.rows)``, with ``PairCollator`` as data collator.

Gradient accumulation: both terms are divided by their token counts over the whole accumulated batch
(and all data-parallel ranks), as Trainer does for the model's own loss, so accumulating k micro-batches
gives the same gradient as one k-times larger batch.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from transformers import Trainer

from trainer_plugin.config import SFTMixConfig
from trainer_plugin.loss import sftmix_loss
from trainer_plugin.sampler import PairedSampler


def _count_mix_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Tokens the Mixup term averages over in a [confident..., unconfident...] batch: sum of min(N_c, N_u)."""
    n = (labels[:, 1:] != -100).sum(dim=1)
    k = labels.shape[0] // 2
    return torch.minimum(n[:k], n[k:]).sum()


def _confident_flags(dataset) -> list[bool]:
    """The ``confident`` flag of every example: a SplitDataset's rows, or a ``datasets.Dataset`` column."""
    if hasattr(dataset, "column_names") and "confident" in dataset.column_names:
        return [bool(x) for x in dataset["confident"]]
    if hasattr(dataset, "rows") and all("confident" in r for r in dataset.rows):
        return [bool(r["confident"]) for r in dataset.rows]
    raise ValueError(
        "train_dataset needs a 'confident' flag per example: use trainer_plugin.data.load_training_set "
        "(SplitDataset, or datasets.Dataset.from_list(training_set.rows) for TRL)"
    )


class SFTMixMixin:
    """Paired sampling, Beta-distributed lam, the SFTMix loss and its logging, for any Trainer subclass."""

    def __init__(self, *args, sftmix: SFTMixConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sftmix = sftmix or SFTMixConfig()
        batch = self.args.per_device_train_batch_size
        if batch < 2 or batch % 2:
            raise ValueError(f"per_device_train_batch_size must be even and >= 2 (pairs), got {batch}")
        if self.train_dataset is not None:
            _confident_flags(self.train_dataset)  # fails early on a dataset without the split
        # The loss is divided by the accumulated batch's token counts here, so Trainer must not divide again.
        self.model_accepts_loss_kwargs = True
        self._lam_rng = np.random.default_rng(self.args.seed)
        self._mix_items: torch.Tensor | None = None
        self._stats: dict[str, float] = defaultdict(float)

    # --- data -------------------------------------------------------------------------------------
    def _get_train_sampler(self, *args, **kwargs):
        flags = _confident_flags(self.train_dataset)
        conf = [i for i, f in enumerate(flags) if f]
        unconf = [i for i, f in enumerate(flags) if not f]
        return PairedSampler(
            conf,
            unconf,
            self.args.per_device_train_batch_size // 2,
            seed=self.args.seed,
            world_size=self.args.world_size,
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        mix = sum((_count_mix_tokens(b["labels"]) for b in batches), torch.tensor(0)).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            mix = self.accelerator.gather(mix).sum()
        self._mix_items = mix
        return batches, num_items

    # --- loss -------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        k = inputs["input_ids"].shape[0] // 2
        batch_c = {key: v[:k] for key, v in inputs.items()}
        batch_u = {key: v[k:] for key, v in inputs.items()}
        lam = float(self._lam_rng.beta(self.sftmix.alpha, self.sftmix.alpha))
        mu = self.sftmix.mu if self.sftmix.mixup else 0.0
        mix_den = self._mix_items if num_items_in_batch is not None else None
        out = sftmix_loss(
            model,
            batch_c,
            batch_u,
            lam=lam,
            mu=mu,
            chunk_tokens=self.sftmix.chunk_tokens,
            ntp_denominator=num_items_in_batch,
            mixup_denominator=mix_den,
        )
        loss = out.loss
        if num_items_in_batch is not None and self.args.average_tokens_across_devices and self.args.world_size > 1:
            loss = loss * self.args.world_size  # data parallelism averages gradients over ranks
        self._record(out, num_items_in_batch, mix_den, lam)
        return (loss, out) if return_outputs else loss

    def _record(self, out, ntp_den, mix_den, lam: float) -> None:
        s = self._stats
        s["ntp_sum"] += out.ntp_loss.item() * float(ntp_den if ntp_den is not None else max(out.n_ntp_tokens, 1))
        s["ntp_tokens"] += out.n_ntp_tokens
        s["mix_sum"] += out.mixup_loss.item() * float(mix_den if mix_den is not None else max(out.n_mixup_tokens, 1))
        s["mix_tokens"] += out.n_mixup_tokens
        s["lam_sum"] += lam
        s["steps"] += 1

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        s = self._stats
        if s["steps"] and "loss" in logs:
            # Per-rank means since the last log (token counts may differ a little between ranks).
            logs["ntp_loss"] = round(s["ntp_sum"] / max(s["ntp_tokens"], 1), 4)
            if self.sftmix.mixup:
                logs["mixup_loss"] = round(s["mix_sum"] / max(s["mix_tokens"], 1), 4)
            logs["lam"] = round(s["lam_sum"] / s["steps"], 4)
            s.clear()
        super().log(logs, *args, **kwargs)


class SFTMixTrainer(SFTMixMixin, Trainer):
    """``transformers.Trainer`` training with ``loss = NTP + mu * Mixup`` on confident/unconfident pairs."""
