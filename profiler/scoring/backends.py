"""The scoring backend a run asked for: ``torch``, ``vllm`` or ``ray`` (their shared types: ``scoring/base.py``).

``torch`` (always there) loads each checkpoint with transformers (adapter checkpoints in turn on one loaded base
model); ``vllm`` keeps one engine with LoRA enabled for every adapter checkpoint and one engine per full
checkpoint, and hands the pass that embeds to the torch backend (vLLM returns no hidden states); ``ray`` maps
the torch scorer over a Ray cluster's actors. Leaving ``open_checkpoint`` frees what the checkpoint loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from profiler.data.items import item_lengths
from profiler.errors import SftmixError
from profiler.scoring.base import Backend, BackendSettings, ScoreItem


def resolve_backend(backend: str, device) -> str:
    """``auto``: vLLM when it is installed and the device is a GPU, else torch. ``vllm`` must be installed."""
    from profiler.scoring.vllm_backend import INSTALL_HINT, vllm_available

    if backend == "torch":
        return "torch"
    if backend == "vllm":
        if not vllm_available():
            raise SftmixError(INSTALL_HINT)
        return "vllm"
    return "vllm" if device.type == "cuda" and vllm_available() else "torch"


def make_backend(
    choice: str, settings: BackendSettings, checkpoints: Sequence[Any], items: Sequence[ScoreItem]
) -> Backend:
    """The backend a run asked for (``auto``, ``torch`` or ``vllm``; ``settings.ray`` picks Ray)."""
    if settings.ray:
        from profiler.scoring.ray_backend import RayBackend

        return RayBackend(settings)
    if resolve_backend(choice, settings.torch_device) == "vllm":
        from profiler.scoring.vllm_backend import VllmBackend

        return VllmBackend(settings, checkpoints, max(item_lengths(items), default=1) + 1)
    from profiler.scoring.torch_backend import TorchBackend

    return TorchBackend(settings)
