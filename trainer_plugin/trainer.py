"""SFTMixTrainer: Hugging Face Trainer with paired batches and the SFTMix loss.

:class:`SFTMixMixin` holds everything, so it can also be mixed into TRL's ``SFTTrainer`` or another
Trainer subclass: ``class MyTrainer(SFTMixMixin, SFTTrainer)``. The train dataset must say which examples
are confident: the ``datasets.Dataset`` of :func:`trainer_plugin.data.load_training_set` (``.dataset``, the
memory-mapped rendered cache, or a selection of it), with ``PairCollator`` as data collator.

Evaluation (an ``eval_dataset`` of the same rows, e.g. held out with :func:`trainer_plugin.data.hold_out`) logs the
response NTP loss, token-weighted, overall and per split: ``eval_ntp_loss`` (also ``eval_loss``),
``eval_ntp_loss_confident``, ``eval_ntp_loss_unconfident``. Per-example sums are gathered across processes
(duplicates of the last uneven batch dropped), so 1 and N processes give the same numbers.

Batches: :class:`trainer_plugin.sampler.PairedSampler`'s random confident/unconfident pairs, dealt into batches of
pairs of similar length (``group_by_length_pairs``, the default; the lengths are the ``input_ids`` lengths, read from
the Arrow offsets) or in the order they were drawn. With ``padding_free`` (default: on under flash attention) the
forward runs on each batch's real tokens packed into one row, so no padding is computed at all
(:func:`trainer_plugin.loss.final_hidden_states`). Logged with the loss, per process since the last log:
``tokens_real`` (tokens that are not padding), ``tokens_padded`` (positions the forward computes, padding included:
the real tokens alone when padding-free) and ``padded_fraction`` (``1 - tokens_real / tokens_padded``).

Resume: the lam generator's state is saved in every checkpoint (``sftmix_state.json``) and restored by
``train(resume_from_checkpoint=...)``; the paired sampler's batches are a function of (seed, epoch) and the
examples' lengths, and Trainer skips the batches already trained, so a resumed run repeats the uninterrupted one.

Gradient accumulation: both terms are divided by their token counts over the whole accumulated batch
(and all data-parallel ranks), as Trainer does for the model's own loss, so accumulating k micro-batches
gives the same gradient as one k-times larger batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_utils import EvalPrediction, get_last_checkpoint

from trainer_plugin.config import SFTMixConfig
from trainer_plugin.data import EvalCollator
from trainer_plugin.loss import row_nll, sftmix_loss, unwrap
from trainer_plugin.sampler import PairedSampler

STATE_FILE = "sftmix_state.json"

log = logging.getLogger(__name__)


def _count_mix_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Tokens the Mixup term averages over in a [confident..., unconfident...] batch: sum of min(N_c, N_u)."""
    n = (labels[:, 1:] != -100).sum(dim=1)
    k = labels.shape[0] // 2
    return torch.minimum(n[:k], n[k:]).sum()


def _confident_flags(dataset) -> list[bool]:
    """The ``confident`` flag of every example: a ``datasets.Dataset`` column."""
    if hasattr(dataset, "column_names") and "confident" in dataset.column_names:
        return [bool(x) for x in dataset["confident"]]
    raise ValueError(
        "train_dataset needs a 'confident' flag per example: use trainer_plugin.data.load_training_set "
        "(its .dataset, for SFTMixTrainer and TRL's SFTTrainer alike)"
    )


def example_lengths(dataset) -> np.ndarray:
    """Tokens of every example (its ``input_ids`` length), in dataset order.

    For a ``datasets.Dataset`` the lengths come from the Arrow list offsets of the whole table, then go through the
    dataset's indices mapping (a ``select``/``shuffle`` view), so no token is read: ~1M rows take milliseconds."""
    table = getattr(dataset, "data", None)
    if table is not None and "input_ids" in getattr(dataset, "column_names", ()):
        import pyarrow.compute as pc

        lengths = pc.list_value_length(table.column("input_ids"))
        indices = getattr(dataset, "_indices", None)
        if indices is not None:
            lengths = lengths.take(indices.column(0))
        return np.asarray(lengths.to_numpy(), dtype=np.int64)
    return np.array([len(row["input_ids"]) for row in dataset], dtype=np.int64)


def eval_ntp_metrics(pred: EvalPrediction) -> dict[str, float]:
    """Token-weighted response NLL, overall and per split, from per-example (nll_sum, n_tokens) and split flags."""
    sums = np.asarray(pred.predictions, dtype=np.float64).reshape(-1, 2)
    confident = np.asarray(pred.label_ids).reshape(-1).astype(bool)
    out = {"ntp_loss": sums[:, 0].sum() / max(sums[:, 1].sum(), 1)}
    for name, rows in (("confident", confident), ("unconfident", ~confident)):
        if rows.any():
            out[f"ntp_loss_{name}"] = sums[rows, 0].sum() / max(sums[rows, 1].sum(), 1)
    out["loss"] = out["ntp_loss"]
    return {k: float(v) for k, v in out.items()}


def resolve_checkpoint(resume: str | bool | None, output_dir: str) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint directory, or ``last`` / True for the newest in ``output_dir``."""
    if resume in (None, False, ""):
        return None
    if resume is True or str(resume).lower() in ("last", "latest", "true"):
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {resume}: no checkpoint-N directory in {output_dir}")
        return last
    if not Path(resume, "trainer_state.json").is_file():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume}: not a Trainer checkpoint (no trainer_state.json)")
    return str(resume)


def read_state(checkpoint: str) -> dict:
    """What :class:`SFTMixMixin` saved in a checkpoint (empty for a checkpoint of another trainer)."""
    path = Path(checkpoint, STATE_FILE)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class SFTMixMixin:
    """Paired sampling, Beta-distributed lam, the SFTMix loss, its logging and evaluation, for any Trainer subclass."""

    def __init__(self, *args, sftmix: SFTMixConfig | None = None, **kwargs):
        if kwargs.get("compute_metrics") is None:  # also for evaluate(eval_dataset=...) on a set given later
            kwargs["compute_metrics"] = eval_ntp_metrics
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
        self._padding_free: bool | None = None  # resolved from the model at the first step

    def uses_padding_free(self, model) -> bool:
        """``padding_free`` as set, or (unset) whether the model's attention is a flash kernel, which takes packed
        rows natively; sdpa and eager keep packed rows apart with a block mask, exact but no cheaper."""
        if self._padding_free is None:
            attention = str(getattr(getattr(unwrap(model), "config", None), "_attn_implementation", None) or "")
            chosen = self.sftmix.padding_free
            self._padding_free = "flash" in attention if chosen is None else bool(chosen)
            if chosen and "flash" not in attention:
                log.warning(
                    "padding_free with attn_implementation=%r: exact, but this kernel computes the packed rows' "
                    "full attention; flash attention is what makes it cheaper",
                    attention,
                )
        return self._padding_free

    # --- data -------------------------------------------------------------------------------------
    def _get_train_sampler(self, *args, **kwargs):
        # self.train_dataset, not the dataset Trainer passes: that one may have lost its unused columns (the split).
        dataset = self.train_dataset
        strategy = getattr(self.args, "train_sampling_strategy", "random")
        if strategy != "random":
            log.warning(
                "train_sampling_strategy=%r is ignored: SFTMix trains on paired batches (group_by_length_pairs=%s)",
                strategy,
                self.sftmix.group_by_length_pairs,
            )
        flags = np.asarray(_confident_flags(dataset), dtype=bool)
        # Every rank builds the same sampler (same seed, same lengths) and takes every world_size-th batch of it.
        return PairedSampler(
            np.flatnonzero(flags),
            np.flatnonzero(~flags),
            self.args.per_device_train_batch_size // 2,
            seed=self.args.seed,
            world_size=self.args.world_size,
            accumulation=self.args.gradient_accumulation_steps,
            lengths=example_lengths(dataset) if self.sftmix.group_by_length_pairs else None,
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        mix = sum((_count_mix_tokens(b["labels"]) for b in batches), torch.tensor(0)).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            mix = self.accelerator.gather(mix).sum()
        self._mix_items = mix
        return batches, num_items

    def get_eval_dataloader(self, eval_dataset=None):
        # Evaluation batches hold any mix of splits: pad them without the pair layout, keep each row's split.
        collator = self.data_collator
        self.data_collator = EvalCollator(self.processing_class.pad_token_id if self.processing_class else 0)
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = collator

    # --- evaluation -------------------------------------------------------------------------------
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Per-example response NLL sums and token counts (as "logits") and split flags (as "labels")."""
        inputs = self._prepare_inputs(inputs)
        confident = inputs.pop("confident")
        nll, n = row_nll(model, inputs, chunk_tokens=self.sftmix.chunk_tokens)
        sums = torch.stack([nll, n.to(nll.dtype)], dim=1)
        return None, sums, confident.to(torch.int64)

    # --- resume -----------------------------------------------------------------------------------
    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if self.args.process_index == 0:  # every rank draws the same lam sequence
            state = {"lam_rng": self._lam_rng.bit_generator.state}
            if hasattr(self.args, "resume_settings"):
                state["settings"] = self.args.resume_settings()
            Path(output_dir, STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if checkpoint is not None:
            lam_state = read_state(checkpoint).get("lam_rng")
            if lam_state is not None:
                self._lam_rng.bit_generator.state = lam_state
        return super().train(checkpoint, *args, **kwargs)

    # --- loss -------------------------------------------------------------------------------------
    def training_step(self, *args, **kwargs):
        start = time.perf_counter()
        loss = super().training_step(*args, **kwargs)
        self._stats["step_seconds"] += time.perf_counter() - start
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        k = inputs["input_ids"].shape[0] // 2
        attn = inputs.get("attention_mask")
        padding_free = self.uses_padding_free(model)
        self._batch_tokens = int(attn.sum()) if attn is not None else inputs["input_ids"].numel()
        self._batch_padded = self._batch_tokens if padding_free else inputs["input_ids"].numel()
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
            padding_free=padding_free,
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
        s["input_tokens"] += self._batch_tokens
        s["padded_tokens"] += self._batch_padded

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        s = self._stats
        if s["steps"] and "loss" in logs:
            # Per-rank means since the last log (token counts may differ a little between ranks).
            logs["ntp_loss"] = round(s["ntp_sum"] / max(s["ntp_tokens"], 1), 4)
            if self.sftmix.mixup:
                logs["mixup_loss"] = round(s["mix_sum"] / max(s["mix_tokens"], 1), 4)
            logs["lam"] = round(s["lam_sum"] / s["steps"], 4)
            # Tokens (prompt and response, no padding) this process trained on per second of training steps.
            logs["tokens_per_second_per_device"] = round(s["input_tokens"] / max(s["step_seconds"], 1e-9), 1)
            # What padding cost: the batches' positions (padding included) against their real tokens.
            logs["tokens_real"] = int(s["input_tokens"])
            logs["tokens_padded"] = int(s["padded_tokens"])
            logs["padded_fraction"] = round(1 - s["input_tokens"] / max(s["padded_tokens"], 1), 4)
            s.clear()
        super().log(logs, *args, **kwargs)


class SFTMixTrainer(SFTMixMixin, Trainer):
    """``transformers.Trainer`` training with ``loss = NTP + mu * Mixup`` on confident/unconfident pairs."""
