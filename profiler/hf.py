"""Hugging Face helpers shared by the reference fine-tuning, the scorers and ``trainer_plugin``.

The ``--model`` name of the packaged model; model, tokenizer and adapter loading (``adapter_config.json`` is read
here and nowhere else), the backbone/head split of a causal LM, device and dtype, and the ``TrainingArguments``
helpers.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from profiler import assets
from profiler.assets import PACKAGED_MODEL
from profiler.errors import ModelError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it and float32 elsewhere."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def resolve_model(name_or_path: str) -> str:
    """A ``--model`` value as a directory or hub name: ``smollm2-135m-instruct`` (:data:`PACKAGED_MODEL`, in any
    letter case) is the packaged model's plain checkpoint, converted on first use (a directory of that name, where
    one exists, is read instead); any other value is returned as it is."""
    if str(name_or_path).lower() != PACKAGED_MODEL or Path(name_or_path).exists():
        return name_or_path
    return str(assets.smollm2_checkpoint())


def _check_exists(name_or_path: str, role: str = "model") -> None:
    p = Path(name_or_path)
    looks_local = p.is_absolute() or name_or_path.startswith(".") or name_or_path.count("/") != 1
    if not p.exists() and looks_local:
        raise ModelError(f"{role} path does not exist: {name_or_path}")


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_config(path: str | Path) -> dict:
    """A peft adapter directory's ``adapter_config.json``."""
    try:
        return json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the adapter config of {path}: {e}") from e


def adapter_base(path: str | Path) -> str | None:
    """The base model an adapter checkpoint was trained from, as recorded by peft."""
    return adapter_config(path).get("base_model_name_or_path")


def lora_rank(path: str | Path) -> int:
    """The LoRA rank of an adapter checkpoint."""
    return int(adapter_config(path).get("r", 16))


@contextlib.contextmanager
def _peft_wrapping() -> Iterator[None]:
    """Around making a ``PeftModel``: peft 0.21 reads transformers' deprecated ``model.is_gradient_checkpointing``
    in ``PeftModel.__init__`` itself (``getattr(model, "is_gradient_checkpointing", True)``), and transformers 5
    answers with a FutureWarning on every adapter made or loaded. No call of ours reads it and no argument avoids
    it, so exactly that message is ignored, only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


def add_lora(model, config):
    """``model`` with a new LoRA adapter of ``config`` (a ``peft.LoraConfig``) to train."""
    from peft import get_peft_model

    with _peft_wrapping():
        return get_peft_model(model, config)


def apply_adapter(base_model, path: str | Path):
    """A loaded base model with the adapter at ``path`` on top, in eval mode (``.unload()`` gives the base back)."""
    from peft import PeftModel

    try:
        with _peft_wrapping():
            return PeftModel.from_pretrained(base_model, str(path)).eval()
    except Exception as e:
        raise ModelError(f"cannot load the adapter checkpoint {path}: {e}") from e


def load_tokenizer(name_or_path: str):
    """A Hugging Face tokenizer, with a pad token set (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    _check_exists(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as e:
        raise ModelError(f"cannot load a tokenizer from {name_or_path}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    name_or_path: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    base: str | None = None,
):
    """Load a causal LM, or a peft adapter checkpoint on top of its base model, in eval mode.

    Args:
        name_or_path: a model directory or hub name, or an adapter directory.
        device: where to put it.
        dtype: parameter dtype.
        base: the base model for an adapter directory (defaults to the one the adapter names).
    """
    from transformers import AutoModelForCausalLM

    _check_exists(name_or_path)
    try:
        if is_adapter_dir(name_or_path):
            base_path = base or adapter_base(name_or_path)
            if not base_path:
                raise ModelError(f"adapter checkpoint {name_or_path} names no base model; pass --model")
            _check_exists(base_path)
            model = apply_adapter(AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype), name_or_path)
        else:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot load a causal LM from {name_or_path}: {e}") from e
    return model.to(device).eval()


def load_trainable_lm(
    name_or_path: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    attn_implementation: str | None = None,
    lora_r: int | None = None,
    lora_alpha: int | None = None,
    role: str = "model",
):
    """A causal LM to train: the reference model of the profile and the target of ``sftmix train`` both come
    from here.

    Args:
        name_or_path: a model directory or hub name.
        dtype: parameter dtype (``"auto"``: the checkpoint's own).
        attn_implementation: ``eager``, ``sdpa``, ``flash_attention_2``, ... (None: transformers' default).
        lora_r: with a rank, a new LoRA adapter on every linear layer (no dropout) is what trains.
        lora_alpha: the adapter's scaling numerator (default ``2 * lora_r``).
        role: how errors name the model (``reference model``, ``target model``).

    Raises:
        ModelError: one line naming the model and why it does not load.
    """
    from transformers import AutoModelForCausalLM

    _check_exists(name_or_path, role)
    kwargs = (
        {"dtype": dtype}
        if attn_implementation is None
        else {"dtype": dtype, "attn_implementation": attn_implementation}
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except Exception as e:
        raise ModelError(f"cannot load the {role} {name_or_path}: {e}") from e
    if lora_r:
        from peft import LoraConfig

        config = LoraConfig(
            r=lora_r,
            lora_alpha=2 * lora_r if lora_alpha is None else lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = add_lora(model, config)
    return model


def causal_lm_parts(model) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The backbone (returning final, normed hidden states) and a head mapping them to logits.

    The head applies the model's own logit transforms (Gemma 2 final-logit softcapping, Cohere-style
    logit scaling), so head(backbone(x)) equals the model's logits. Works through peft wrappers.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm_head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if lm_head is None:
        raise ModelError(f"{type(inner).__name__} has no accessible LM head (get_output_embeddings() is None)")
    backbone = inner.get_decoder()
    if backbone is inner:
        raise ModelError(f"cannot find the decoder backbone of {type(inner).__name__}")
    config = inner.config
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)

    def head(hidden: torch.Tensor) -> torch.Tensor:
        logits = lm_head(hidden)
        if scale is not None:
            logits = logits * scale
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return backbone, head


def warmup_args(cls, ratio: float) -> dict[str, float]:
    """Warm-up as a fraction of the steps, for the installed ``TrainingArguments``: ``warmup_ratio`` where
    ``warmup_steps`` is an int (transformers 4), else ``warmup_steps`` (5 reads a float below 1 as a ratio)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls)}
    if "warmup_ratio" in fields and "warmup_steps" in fields and fields["warmup_steps"].type in ("int", int):
        return {"warmup_ratio": ratio}
    return {"warmup_steps": ratio}
