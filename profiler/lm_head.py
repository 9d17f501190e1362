"""The LM head at selected positions, in chunks: the one rule the scorer and the trainer share.

Both score only the hidden states that predict a response token, and never hold a ``[tokens x vocab]`` tensor of
the whole batch: the head runs on ``chunk_tokens`` hidden states at a time, its logits in float32. The scorer's
perplexities and the trainer's NTP loss are the same per-token NLL, computed by :func:`token_nll` (the trainer's
loss sums it under activation checkpointing, :func:`chunked_sum`, so backward recomputes each chunk's logits).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

# Logits per chunk on an accelerator: 64M (256 MiB in float32), so a 256k vocabulary gets 262-token chunks, a 128k
# one 523 and one up to 64k 1024 (chunk sizes measured in benchmarks/README.md).
CHUNK_LOGITS = 2**26
# Hidden states per chunk on a CPU, whose caches favour small chunks (measured in benchmarks/README.md).
CPU_CHUNK_TOKENS = 128


def chunk_tokens(vocab_size: int, device: torch.device | str | None = None) -> int:
    """Hidden states per LM-head chunk: :data:`CPU_CHUNK_TOKENS` on a CPU, else about :data:`CHUNK_LOGITS` logits,
    between 128 and 1024 tokens (``device`` None: the accelerator rule)."""
    if device is not None and torch.device(device).type == "cpu":
        return CPU_CHUNK_TOKENS
    return max(128, min(1024, CHUNK_LOGITS // max(vocab_size, 1)))


def head_chunk_tokens(model: torch.nn.Module, device: torch.device | str | None = None) -> int:
    """:func:`chunk_tokens` of a model's vocabulary (the LM head's ``out_features``: under ZeRO-3 / FSDP its
    weight is a shard outside the forward)."""
    head = model.get_output_embeddings()
    return chunk_tokens(getattr(head, "out_features", None) or model.config.vocab_size, device)


def token_nll(head: Callable, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """Per-token NLL (float32) of ``targets`` under ``head(hidden)``, a chunk of ``chunk_tokens`` at a time.

    Args:
        head: maps ``[n, hidden]`` to ``[n, vocab]`` logits (softcapping included).
        hidden: ``[n, hidden]`` hidden states at the positions predicting ``targets``.
        targets: ``[n]`` token ids.
    """
    out = torch.empty(targets.shape[0], dtype=torch.float32, device=hidden.device)
    for s in range(0, targets.shape[0], chunk_tokens):
        logits = head(hidden[s : s + chunk_tokens]).float()
        tgt = targets[s : s + chunk_tokens]
        out[s : s + chunk_tokens] = torch.logsumexp(logits, dim=-1) - logits.gather(1, tgt[:, None]).squeeze(1)
    return out


def chunked_sum(fn: Callable, *tensors: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """``sum(fn(chunk) for chunk)`` over rows, recomputing each chunk's logits in backward when grads are on."""
    total = tensors[0].new_zeros((), dtype=torch.float32)
    n = tensors[0].shape[0]
    for s in range(0, n, chunk_tokens):
        parts = [t[s : s + chunk_tokens] for t in tensors]
        if torch.is_grad_enabled() and tensors[0].requires_grad:
            total = total + checkpoint(fn, *parts, use_reentrant=False)
        else:
            total = total + fn(*parts)
    return total
