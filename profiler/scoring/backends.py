"""Every scoring backend behind one interface: open a checkpoint, score items batch by batch.

    backend = make_backend(settings, checkpoints)
    with backend.open_checkpoint(info, embed=False) as scorer:
        for batch in scorer.score(items, desc="checkpoint 1/3", tokens=True):
            ...  # a list of ExampleScore (with per-token NLLs)
    backend.close()

``torch`` (always there) loads each checkpoint with transformers (adapter checkpoints in turn on one loaded base
model); ``vllm`` keeps one engine with LoRA enabled for every adapter checkpoint and one engine per full
checkpoint, and hands the pass that embeds to the torch backend (vLLM returns no hidden states); ``ray`` maps
the torch scorer over a Ray cluster's actors. Leaving ``open_checkpoint`` frees what the checkpoint loaded.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from profiler.data.items import item_lengths
from profiler.errors import SftmixError
from profiler.scoring.base import ExampleScore, ScoreItem


@dataclass(frozen=True)
class BackendSettings:
    """What every backend needs to load and score a checkpoint."""

    base_model: str  # the reference model; the base of adapter checkpoints
    device: str = "auto"
    dtype: str = "auto"
    max_tokens: int | None = None
    max_batch_size: int | None = None
    pad_token_id: int = 0
    progress: bool = True
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    ray: str | None = None


class CheckpointScorer:
    """One opened checkpoint: ``score(items, desc)`` yields lists of :class:`ExampleScore`.

    Args:
        fn: the backend's scoring call, taking the items and ``desc``, ``progress``, ``embed`` and ``tokens``
            keywords.
        progress, embed: the checkpoint's defaults.
    """

    def __init__(self, fn: Callable[..., Iterator[list[ExampleScore]]], *, progress: bool = True, embed: bool = False):
        self._fn: Callable | None = fn
        self.progress = progress
        self.embed = embed

    def score(
        self, items: Sequence[ScoreItem], desc: str = "scoring", *, embed: bool | None = None, tokens: bool = False
    ) -> Iterator[list[ExampleScore]]:
        """Scores of ``items``; ``embed`` (default: the checkpoint's) adds embeddings, ``tokens`` per-token NLLs.

        A checkpoint opened to embed can score other items without embeddings (``embed=False``) on the same
        loaded model: the IFD pass does.
        """
        if self._fn is None:
            raise RuntimeError("this checkpoint was closed")
        embed = self.embed if embed is None else embed
        return self._fn(items, progress=self.progress, desc=desc, embed=embed, tokens=tokens)

    def release(self) -> None:
        self._fn = None  # drops the model the closure holds


class Backend(Protocol):
    name: str

    def open_checkpoint(self, info: Any, *, embed: bool) -> Any:
        """A context manager yielding a :class:`CheckpointScorer` for ``info`` (a ``CheckpointInfo``)."""
        ...

    def close(self) -> None: ...


class TorchBackend:
    """The batched torch scorer; adapter checkpoints are applied in turn to one loaded base model."""

    name = "torch"

    def __init__(self, settings: BackendSettings):
        from profiler.hf import resolve_device, resolve_dtype

        self.s = settings
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self._base = None

    @contextmanager
    def open_checkpoint(self, info: Any, *, embed: bool):
        from profiler.hf import apply_adapter, load_causal_lm
        from profiler.scoring.torch_backend import TorchScorer

        if info.kind == "adapter":
            if self._base is None:
                self._base = load_causal_lm(self.s.base_model, device=self.device, dtype=self.dtype)
            model = apply_adapter(self._base, info.path)
        else:
            model = load_causal_lm(info.path, device=self.device, dtype=self.dtype, base=self.s.base_model)
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


class VllmBackend:
    """vLLM engines for a run: one for the base model with LoRA enabled (every adapter checkpoint is served on
    it) and one per full checkpoint, freed once that checkpoint is scored. The embedding pass runs on torch."""

    name = "vllm"

    def __init__(self, settings: BackendSettings, checkpoints: Sequence[Any], max_len: int):
        import torch

        from profiler.hf import lora_rank, resolve_device, resolve_dtype

        gc.collect()  # vLLM sizes its cache from free GPU memory: hand back what fine-tuning left cached
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.s = settings
        self.dtype = str(resolve_dtype(settings.dtype, resolve_device(settings.device))).replace("torch.", "")
        self.max_len = max_len
        ranks = [lora_rank(c.path) for c in checkpoints if c.kind == "adapter"]
        self.max_rank = max(ranks) if ranks else None
        self._base_engine = None
        self._torch: TorchBackend | None = None

    def _engine(self, model: str, lora: bool):
        from profiler.scoring.vllm_backend import VllmScorer

        return VllmScorer(
            model,
            dtype=self.dtype,
            max_num_batched_tokens=self.s.max_tokens,
            max_model_len=self.max_len,
            tensor_parallel_size=self.s.tensor_parallel_size,
            gpu_memory_utilization=self.s.gpu_memory_utilization,
            max_lora_rank=self.max_rank if lora else None,
        )

    @contextmanager
    def open_checkpoint(self, info: Any, *, embed: bool):
        if embed:
            self._torch = self._torch or TorchBackend(self.s)
            with self._torch.open_checkpoint(info, embed=True) as scorer:
                yield scorer
            return
        if info.kind == "adapter":
            if self._base_engine is None:
                self._base_engine = self._engine(self.s.base_model, lora=True)
            engine, owned = self._base_engine, False
        else:
            engine, owned = self._engine(info.path, lora=False), True
        adapter = info.path if info.kind == "adapter" else None
        scorer = CheckpointScorer(
            lambda items, **kw: engine.score(items, adapter=adapter, **kw), progress=self.s.progress
        )
        try:
            yield scorer
        finally:
            scorer.release()
            if owned:
                engine.close()

    def close(self) -> None:
        if self._base_engine is not None:
            self._base_engine.close()
            self._base_engine = None
        if self._torch is not None:
            self._torch.close()


class RayBackend:
    """The torch scorer in Ray Data actors across a cluster (``--ray auto|ADDRESS|local``)."""

    name = "ray"

    def __init__(self, settings: BackendSettings):
        self.s = settings

    @contextmanager
    def open_checkpoint(self, info: Any, *, embed: bool):
        from profiler.scoring.ray_backend import ray_batches

        s = self.s
        scorer = CheckpointScorer(
            lambda items, *, embed, tokens, **_: ray_batches(
                s.ray,
                info,
                items,
                base=s.base_model,
                dtype=s.dtype,
                max_tokens=s.max_tokens,
                pad_token_id=s.pad_token_id,
                embed=embed,
                tokens=tokens,
            ),
            embed=embed,
        )
        try:
            yield scorer
        finally:
            scorer.release()

    def close(self) -> None:
        return None


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
        return RayBackend(settings)
    from profiler.hf import resolve_device

    if resolve_backend(choice, resolve_device(settings.device)) == "vllm":
        max_len = max(item_lengths(items), default=1) + 1
        return VllmBackend(settings, checkpoints, max_len)
    return TorchBackend(settings)
