"""The torch scoring backend: batched forward passes, LM head only at response positions, chunked log-softmax.

Memory stays bounded by ``chunk_tokens x vocab`` floats whatever the batch, so 256k vocabularies fit. A token
prefix shared by a whole batch (a chat template's system prompt, say) is run once and its KV cache reused.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from profiler.data.items import item_lengths
from profiler.hf import causal_lm_parts
from profiler.lm_head import head_chunk_tokens, token_nll
from profiler.scoring.base import BackendSettings, CheckpointScorer, ExampleScore, ScoreItem
from profiler.scoring.batching import token_budget_batches


def _cache_argument(backbone) -> str:
    """The KV-cache argument's name: ``cache`` since transformers 5.2x, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _output_cache(out):
    return out.cache if "cache" in getattr(out, "__dataclass_fields__", {}) else out.past_key_values


def needed_tokens(item: ScoreItem) -> ScoreItem:
    """The item cut after its last response token: later tokens (a template's trailing newline, say) change no
    score, since attention is causal. The embedding pass keeps every token (it pools them all)."""
    positions = np.flatnonzero(np.asarray(item.response_mask, dtype=bool))
    if len(positions) == 0 or positions[-1] + 1 == len(item.input_ids):
        return item
    last = int(positions[-1])
    return ScoreItem(item.example_id, item.input_ids[: last + 1], item.response_mask[: last + 1])


class TorchScorer:
    """Scores examples with a loaded Hugging Face causal LM (plain or peft-wrapped).

    Args:
        model: the causal LM, already on its device and in eval mode.
        max_tokens: padded tokens per forward batch.
        max_batch_size: optional cap on rows per batch.
        chunk_tokens: response positions per LM-head chunk (default: :func:`profiler.lm_head.chunk_tokens`, the
            trainer's rule too).
        pad_token_id: id used for padding (its value never matters: padded positions are masked).
    """

    def __init__(
        self,
        model,
        *,
        max_tokens: int | None = None,
        max_batch_size: int | None = None,
        chunk_tokens: int | None = None,
        pad_token_id: int = 0,
        share_prefix: bool = True,
        min_prefix: int = 8,
    ):
        self.model = model
        self.backbone, self.head = causal_lm_parts(model)
        self.device = next(model.parameters()).device
        on_gpu = self.device.type != "cpu"
        # CPU caches favour small batches and logit chunks (measured in benchmarks/README.md); GPUs favour big ones.
        self.max_tokens = max_tokens or (16384 if on_gpu else 1024)
        self.chunk_tokens = chunk_tokens or head_chunk_tokens(model, self.device)
        self.max_batch_size = max_batch_size
        self.pad_token_id = pad_token_id
        self.share_prefix = share_prefix
        self.min_prefix = min_prefix

    def _shared_prefix(self, items: Sequence[ScoreItem]) -> int:
        """Length of the token prefix all items share and that holds no position predicting a response token."""
        if not self.share_prefix or len(items) < 2:
            return 0
        first = np.asarray(items[0].input_ids)
        n = min(len(it.input_ids) for it in items)
        for it in items:
            # Stop one before the first response token: that position's hidden state is needed per item.
            later = np.flatnonzero(np.asarray(it.response_mask, dtype=bool)[1:])
            n = min(n, (int(later[0]) + 1 if len(later) else len(it.input_ids)) - 1)
        for it in items[1:]:
            differ = np.flatnonzero(np.asarray(it.input_ids)[:n] != first[:n])
            n = int(differ[0]) if len(differ) else n
        return n if n >= self.min_prefix else 0

    def _hidden(self, ids: torch.Tensor, attn: torch.Tensor, prefix: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final hidden states of the batch after ``prefix``, and those of the shared prefix (``[prefix, H]``).

        A shared prefix is run once and its KV cache reused by every row.
        """
        if prefix == 0:
            return self.backbone(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state, None
        out = self.backbone(input_ids=ids[:1, :prefix], use_cache=True)
        cache = _output_cache(out)
        cache.batch_repeat_interleave(ids.shape[0])
        hidden = self.backbone(
            input_ids=ids[:, prefix:], attention_mask=attn, use_cache=True, **{_cache_argument(self.backbone): cache}
        ).last_hidden_state
        return hidden, out.last_hidden_state[0]

    @staticmethod
    def _mean_pool(
        hidden: torch.Tensor, prefix_hidden: torch.Tensor | None, attn: torch.Tensor, prefix: int
    ) -> torch.Tensor:
        """Mean of the final hidden states over each row's real tokens, in float32: ``[B, H]``."""
        mask = attn[:, prefix:].unsqueeze(-1).float()
        total = (hidden.float() * mask).sum(dim=1)
        if prefix_hidden is not None:
            total = total + prefix_hidden.float().sum(dim=0)
        return total / attn.sum(dim=1, keepdim=True).float()

    def _collate(self, items: Sequence[ScoreItem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        longest = max(len(it.input_ids) for it in items)
        ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(items), longest), dtype=torch.long)
        resp = torch.zeros((len(items), longest), dtype=torch.bool)
        for r, it in enumerate(items):  # right padding: positions of real tokens are unaffected
            n = len(it.input_ids)
            ids[r, :n] = torch.as_tensor(np.asarray(it.input_ids, dtype=np.int64))
            attn[r, :n] = 1
            resp[r, :n] = torch.as_tensor(np.array(it.response_mask, dtype=bool))
        resp[:, 0] = False  # the first token has nothing to predict it
        return ids.to(self.device), attn.to(self.device), resp.to(self.device)

    @torch.inference_mode()
    def score_batch(self, items: Sequence[ScoreItem], embed: bool = False, tokens: bool = False) -> list[ExampleScore]:
        """Response NLL sums of one batch, independent of what else is in the batch.

        With ``embed``, each score also carries the example's mean-pooled final hidden state (same forward pass);
        with ``tokens``, the per-token NLLs its sum adds up (``token_nll``, float32, in position order).
        """
        if not embed:
            items = [needed_tokens(it) for it in items]
        ids, attn, resp = self._collate(items)
        prefix = self._shared_prefix(items)
        # Position t predicts token t+1, so the last column predicts nothing: only the embedding needs it.
        last = ids.shape[1] if embed else max(ids.shape[1] - 1, prefix + 1)
        hidden, prefix_hidden = self._hidden(ids[:, :last], attn[:, :last], prefix)  # [B, last - prefix, H]
        # Shift the response mask left to select the predicting hidden states.
        predict = resp[:, 1:]
        h = hidden[:, : ids.shape[1] - 1 - prefix][predict[:, prefix:]]
        targets = ids[:, 1:][predict]
        rows = torch.arange(len(items), device=self.device)[:, None].expand_as(predict)[predict]
        nll = token_nll(self.head, h, targets, self.chunk_tokens)
        sums = torch.zeros(len(items), dtype=torch.float64, device=self.device).index_add_(0, rows, nll.double())
        counts = predict.sum(dim=1).tolist()
        vectors = [None] * len(items)
        if embed:
            vectors = list(self._mean_pool(hidden, prefix_hidden, attn, prefix).cpu().numpy())
        per_token = [None] * len(items)
        if tokens:  # the selected positions are row-major: each row's NLLs are one contiguous run, in order
            per_token = np.split(nll.cpu().numpy(), np.cumsum(counts)[:-1])
        return [
            ExampleScore(it.example_id, float(s), int(c), v, t)
            for it, s, c, v, t in zip(items, sums.tolist(), counts, vectors, per_token)
        ]

    def score(
        self,
        items: Sequence[ScoreItem],
        *,
        progress: bool = True,
        desc: str = "scoring",
        embed: bool = False,
        tokens: bool = False,
    ) -> Iterator[list[ExampleScore]]:
        """Yield scores batch by batch, longest examples first (with embeddings when ``embed``, per-token NLLs
        when ``tokens``)."""
        lengths = item_lengths(items, trim=not embed)  # score_batch trims each batch's items the same way
        batches = token_budget_batches(lengths, self.max_tokens, self.max_batch_size)
        with tqdm(total=sum(lengths), unit="tok", desc=desc, disable=not progress, unit_scale=True) as bar:
            for batch in batches:
                chunk = [items[i] for i in batch]
                yield self.score_batch(chunk, embed, tokens)
                bar.update(sum(lengths[i] for i in batch))


class TorchBackend:
    """The batched torch scorer; adapter checkpoints are applied in turn to one loaded base model."""

    name = "torch"

    def __init__(self, settings: BackendSettings):
        self.s = settings
        self.device, self.dtype = settings.torch_device, settings.torch_dtype
        self._base = None

    @contextmanager
    def open_checkpoint(self, info: Any, *, embed: bool):
        from profiler.hf import apply_adapter, load_causal_lm

        if info.kind == "adapter":
            if self._base is None:
                self._base = load_causal_lm(self.s.model, device=self.device, dtype=self.dtype)
            model = apply_adapter(self._base, info.path)
        else:
            model = load_causal_lm(info.path, device=self.device, dtype=self.dtype, base=self.s.model)
        scorer = CheckpointScorer(
            TorchScorer(
                model,
                max_tokens=self.s.max_tokens,
                max_batch_size=self.s.max_batch_size,
                pad_token_id=self.s.pad_token_id,
            ).score,
            progress=self.s.progress,
            embed=embed,
        )
        try:
            yield scorer
        finally:
            scorer.release()
            if info.kind == "adapter":
                self._base = model.unload()  # removes the LoRA layers, leaving the base model as loaded
            del model
            gc.collect()

    def close(self) -> None:
        self._base = None
        gc.collect()
