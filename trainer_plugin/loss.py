"""The SFTMix loss: next-token loss plus a Mixup regularizer on final hidden states of confident/unconfident pairs.

``loss = NTP + mu * Mixup``. One backbone forward serves both terms. The LM head runs on hidden states in
chunks whose logits are recomputed in backward (activation checkpointing), so no ``[tokens x vocab]`` tensor
of the whole batch is ever held: memory for the head stays at ``chunk_tokens x vocab``. The chunk rule and the
per-token NLL are the scorer's (:mod:`profiler.lm_head`), so a trained model's NTP and its profile agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from profiler.hf import causal_lm_parts
from profiler.lm_head import chunked_sum, head_chunk_tokens, token_nll

IGNORE = -100


@dataclass
class SFTMixOutput:
    """``loss = ntp_loss + mu * mixup_loss``; the counts are the tokens each term averaged over."""

    loss: torch.Tensor
    ntp_loss: torch.Tensor
    mixup_loss: torch.Tensor
    n_ntp_tokens: int
    n_mixup_tokens: int


def _ce_sum(head: Callable, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return token_nll(head, hidden, targets, hidden.shape[0]).sum()  # one chunk: chunked_sum made it


def _mix_ce_sum(
    head: Callable, hidden: torch.Tensor, y_c: torch.Tensor, y_u: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    logp = torch.log_softmax(head(hidden).float(), dim=-1)
    nll_c = -logp.gather(1, y_c[:, None]).squeeze(1)
    nll_u = -logp.gather(1, y_u[:, None]).squeeze(1)
    return (lam * nll_c + (1 - lam) * nll_u).sum()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel (or similar) wrapper."""
    return model.module if hasattr(model, "module") and not hasattr(model, "get_output_embeddings") else model


def final_hidden_states(
    model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, *, padding_free: bool = False
) -> torch.Tensor:
    """The LM head's input at every position of the padded rows ``ids``, from the model's own forward.

    The call goes through the top-level (possibly DDP-wrapped) forward, so data-parallel wrappers see it;
    ``logits_to_keep=1`` keeps that forward from computing logits for the whole batch.

    With ``padding_free`` the forward runs on the rows' real tokens packed end to end into one row, positions
    restarting at each row and no attention mask: transformers then keeps each row to itself (a varlen kernel
    under flash attention, which computes no padding at all; a block-diagonal mask under sdpa or eager, exact but
    no cheaper). The hidden states come back at the padded rows' positions (zeros at padding).
    """
    if not padding_free:
        out = model(input_ids=ids, attention_mask=attn, output_hidden_states=True, logits_to_keep=1, use_cache=False)
        return out.hidden_states[-1]
    real = attn.bool()
    positions = (real.cumsum(1) - 1)[real]
    out = model(
        input_ids=ids[real][None],
        position_ids=positions[None],
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    packed = out.hidden_states[-1][0]
    hidden = packed.new_zeros((*ids.shape, packed.shape[-1]))
    hidden[real] = packed
    return hidden


def _pad_to(t: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return F.pad(t, (0, length - t.shape[1]), value=value) if t.shape[1] < length else t


def _stack(batch_c: dict, batch_u: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = max(batch_c["input_ids"].shape[1], batch_u["input_ids"].shape[1])

    def get(key: str, pad: int) -> torch.Tensor:
        return torch.cat([_pad_to(batch_c[key], n, pad), _pad_to(batch_u[key], n, pad)])

    ids = get("input_ids", 0)
    attn = get("attention_mask", 0) if "attention_mask" in batch_c else torch.ones_like(ids)
    return ids, attn, get("labels", IGNORE)


def sftmix_loss(
    model: torch.nn.Module,
    batch_c: dict[str, torch.Tensor],
    batch_u: dict[str, torch.Tensor],
    *,
    lam: float | torch.Tensor,
    mu: float = 0.2,
    chunk_tokens: int | None = None,
    ntp_denominator: float | None = None,
    mixup_denominator: float | None = None,
    padding_free: bool = False,
) -> SFTMixOutput:
    """The SFTMix loss of one batch of pairs (row i of ``batch_c`` with row i of ``batch_u``).

    Args:
        model: a Hugging Face causal LM (plain, tied, softcapped, or peft-wrapped).
        batch_c: confident examples: ``input_ids``, ``attention_mask``, ``labels`` (unshifted, -100 outside
            the response).
        batch_u: unconfident examples, same form and the same number of rows.
        lam: the Mixup coefficient, a float or one value per pair.
        mu: weight of the Mixup term (0 skips computing it: the plain NTP baseline).
        chunk_tokens: hidden states per LM-head chunk (default: :func:`profiler.lm_head.chunk_tokens`).
        ntp_denominator: divide the NTP sum by this instead of this batch's token count (gradient
            accumulation: the tokens of the whole accumulated batch).
        mixup_denominator: the same for the Mixup term.
        padding_free: run the forward on the pairs' real tokens packed into one row (see
            :func:`final_hidden_states`): the same loss on right-padded rows (as the trainer's collator pads), without
            computing padding under flash attention.
    """
    if batch_c["input_ids"].shape[0] != batch_u["input_ids"].shape[0]:
        raise ValueError("batch_c and batch_u must hold the same number of rows (one pair per row)")
    inner = unwrap(model)
    _, head = causal_lm_parts(inner)
    ids, attn, labels = _stack(batch_c, batch_u)
    chunk_tokens = chunk_tokens or head_chunk_tokens(inner, ids.device)
    hidden = final_hidden_states(model, ids, attn, padding_free=padding_free)
    # Hidden state t predicts token t+1.
    h, targets = hidden[:, :-1], labels[:, 1:]
    mask = targets != IGNORE
    n_ntp = int(mask.sum())
    ntp_sum = chunked_sum(lambda x, y: _ce_sum(head, x, y), h[mask], targets[mask], chunk_tokens=chunk_tokens)
    ntp = ntp_sum / (ntp_denominator or max(n_ntp, 1))

    pairs = batch_c["input_ids"].shape[0]
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=hidden.device).expand(pairs)
    # Pair i keeps the first n_i = min(N_c, N_u) response positions of both rows. Selecting them row-major
    # gives, for both halves, one segment of n_i positions per pair in the same order: no per-pair loop.
    mask_c, mask_u = mask[:pairs], mask[pairs:]
    n_pair = torch.minimum(mask_c.sum(1), mask_u.sum(1))
    keep_c = mask_c & (mask_c.cumsum(1) <= n_pair[:, None])
    keep_u = mask_u & (mask_u.cumsum(1) <= n_pair[:, None])
    lam_tok = lam_t.repeat_interleave(n_pair)
    n_mix = int(n_pair.sum())
    if n_mix and mu != 0:
        z = lam_tok[:, None] * h[:pairs][keep_c] + (1 - lam_tok[:, None]) * h[pairs:][keep_u]
        mix_sum = chunked_sum(
            lambda x, a, b, w: _mix_ce_sum(head, x, a, b, w),
            z,
            targets[:pairs][keep_c],
            targets[pairs:][keep_u],
            lam_tok,
            chunk_tokens=chunk_tokens,
        )
        mixup = mix_sum / (mixup_denominator or n_mix)
    else:
        mixup = hidden.new_zeros((), dtype=torch.float32)
    return SFTMixOutput(ntp + mu * mixup, ntp, mixup, n_ntp, n_mix)


@torch.no_grad()
def row_nll(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, chunk_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed response-token NLL (float64) and its number of response tokens, for evaluation: the
    per-token NLL of :func:`profiler.lm_head.token_nll`, as the scorer computes it."""
    inner = unwrap(model)
    _, head = causal_lm_parts(inner)
    ids, labels = batch["input_ids"], batch["labels"]
    attn = batch.get("attention_mask", torch.ones_like(ids))
    hidden = final_hidden_states(model, ids, attn)
    h, targets = hidden[:, :-1], labels[:, 1:]
    mask = targets != IGNORE
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(targets)[mask]
    tok = token_nll(head, h[mask], targets[mask], chunk_tokens or head_chunk_tokens(inner, ids.device))
    nll = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device).index_add_(0, rows, tok.double())
    return nll, mask.sum(1)
