"""profiler.hf: the one loader of a model to train (the profile's reference and `sftmix train`'s target)."""

from __future__ import annotations

import pytest
import torch

from profiler.errors import ModelError
from profiler.hf import load_trainable_lm


def test_full_model_in_the_asked_dtype_and_attention(tiny_llama):
    model = load_trainable_lm(str(tiny_llama), dtype=torch.bfloat16, attn_implementation="eager")
    assert not hasattr(model, "peft_config")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert all(p.requires_grad for p in model.parameters())


def test_lora_on_every_linear_layer_with_its_rank_and_alpha(tiny_llama):
    model = load_trainable_lm(str(tiny_llama), lora_r=4, lora_alpha=16)
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (4, 16, 0.0)
    wrapped = {n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # only the adapter trains
    assert load_trainable_lm(str(tiny_llama), lora_r=4).peft_config["default"].lora_alpha == 8  # default 2r


def test_errors_name_the_role_and_the_path(tiny_llama, tmp_path):
    with pytest.raises(ModelError, match=r"target model path does not exist: .*nope"):
        load_trainable_lm(str(tmp_path / "nope"), role="target model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"cannot load the reference model .*empty"):
        load_trainable_lm(str(tmp_path / "empty"), role="reference model")
