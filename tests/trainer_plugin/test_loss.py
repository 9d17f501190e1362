"""sftmix_loss against a straightforward full-logits reference with explicit loops: loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_config
from trainer_plugin import sftmix_loss

VOCAB = 300


def tiny_model(kind: str, tie: bool = False, seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, VOCAB, tie=tie))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    return model.float()


def make_batch(lengths, prompt_lens, seed):
    """Right-padded batch; labels cover positions from the prompt length on (the response)."""
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    ids = torch.zeros(len(lengths), n, dtype=torch.long)
    attn = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (length, p) in enumerate(zip(lengths, prompt_lens)):
        ids[i, :length] = torch.randint(4, VOCAB, (length,), generator=g)
        attn[i, :length] = 1
        labels[i, p:length] = ids[i, p:length]
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def head_logits(model, z):
    logits = model.lm_head(z)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def reference(model, bc, bu, lam, mu):
    """Full logits for NTP; for Mixup an explicit loop over pairs and tokens."""
    n = max(bc["input_ids"].shape[1], bu["input_ids"].shape[1])
    pad = lambda t, v: F.pad(t, (0, n - t.shape[1]), value=v)  # noqa: E731
    ids = torch.cat([pad(bc["input_ids"], 0), pad(bu["input_ids"], 0)])
    attn = torch.cat([pad(bc["attention_mask"], 0), pad(bu["attention_mask"], 0)])
    labels = torch.cat([pad(bc["labels"], -100), pad(bu["labels"], -100)])
    hidden = model.model(input_ids=ids, attention_mask=attn).last_hidden_state
    logits = head_logits(model, hidden).float()
    ntp = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    pairs = bc["input_ids"].shape[0]
    lams = [float(lam)] * pairs if isinstance(lam, float) else [float(x) for x in lam]
    total, count = 0.0, 0
    for i in range(pairs):
        rc = [t for t in range(n - 1) if labels[i, t + 1] != -100]
        ru = [t for t in range(n - 1) if labels[pairs + i, t + 1] != -100]
        for tc, tu in zip(rc, ru):  # zip truncates to min(N_c, N_u)
            z = lams[i] * hidden[i, tc] + (1 - lams[i]) * hidden[pairs + i, tu]
            logp = torch.log_softmax(head_logits(model, z).float(), -1)
            total = total - lams[i] * logp[labels[i, tc + 1]] - (1 - lams[i]) * logp[labels[pairs + i, tu + 1]]
            count += 1
    mixup = total / count
    return ntp + mu * mixup, ntp, mixup


CASES = [("llama", False), ("llama", True), ("gemma2", False), ("qwen2", False)]


@pytest.mark.parametrize("kind,tie", CASES)
@pytest.mark.parametrize("lam", [0.3, "per_pair"])
@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "padding_free"])
def test_loss_and_grads_match_reference(kind, tie, lam, padding_free):
    model = tiny_model(kind, tie)
    bc = make_batch([12, 7, 15], [3, 2, 10], seed=1)  # pairs of unequal lengths and response sizes
    bu = make_batch([9, 14, 6], [4, 1, 2], seed=2)
    lam = torch.tensor([0.1, 0.5, 0.95]) if lam == "per_pair" else lam
    out = sftmix_loss(model, bc, bu, lam=lam, mu=0.2, chunk_tokens=5, padding_free=padding_free)
    grads = torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)
    ref_loss, ref_ntp, ref_mix = reference(model, bc, bu, lam, 0.2)
    ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(out.ntp_loss, ref_ntp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mixup_loss, ref_mix, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert out.n_mixup_tokens == (15 - 10) + (7 - 2) + min(6 - 2, 15 - 10)
    for (name, _), g, r in zip(model.named_parameters(), grads, ref_grads):
        if r is None:
            assert g is None or g.abs().max() == 0, name
        else:
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padding_free_packs_the_real_tokens_into_one_row(attn):
    """The forward sees one row of the 2 x 3 rows' real tokens, positions restarting per row and no mask, and its
    result equals the padded forward's (under eager too: transformers keeps packed rows apart in any kernel)."""
    model = tiny_model("llama")
    model.config._attn_implementation = attn
    bc = make_batch([12, 7, 15], [3, 2, 10], seed=1)
    bu = make_batch([9, 14, 6], [4, 1, 2], seed=2)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)
    packed = sftmix_loss(model, bc, bu, lam=0.3, mu=0.2, padding_free=True)
    hook.remove()
    (kw,) = seen
    assert kw["input_ids"].shape == (1, 12 + 7 + 15 + 9 + 14 + 6) and kw.get("attention_mask") is None
    starts = (kw["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [0, 12, 19, 34, 43, 57]
    padded = sftmix_loss(model, bc, bu, lam=0.3, mu=0.2)
    torch.testing.assert_close(packed.loss, padded.loss, atol=1e-5, rtol=1e-5)
    assert (packed.n_ntp_tokens, packed.n_mixup_tokens) == (padded.n_ntp_tokens, padded.n_mixup_tokens)


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_mu_zero_is_the_models_own_loss(kind):
    model = tiny_model(kind)
    bc = make_batch([10, 8], [3, 3], seed=3)
    bu = make_batch([10, 8], [5, 1], seed=4)
    out = sftmix_loss(model, bc, bu, lam=0.5, mu=0.0)
    stacked = {k: torch.cat([bc[k], bu[k]]) for k in bc}
    own = model(**stacked).loss
    torch.testing.assert_close(out.loss, own, atol=1e-6, rtol=1e-6)


def test_lora_wrapped_head():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # non-zero adapters, so a head that skipped them would differ
    bc = make_batch([10, 8], [3, 3], seed=5)
    bu = make_batch([9, 11], [2, 6], seed=6)
    out = sftmix_loss(model, bc, bu, lam=0.4, mu=0.0)
    stacked = {k: torch.cat([F.pad(bc[k], (0, 11 - 10), value=-100 if k == "labels" else 0), bu[k]]) for k in bc}
    torch.testing.assert_close(out.loss, model(**stacked).loss, atol=1e-6, rtol=1e-6)


def test_bad_pairs():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="same number of rows"):
        sftmix_loss(model, make_batch([5, 5], [1, 1], 0), make_batch([5], [1], 0), lam=0.5)


def test_one_chunk_rule_follows_the_vocabulary_and_the_device():
    from profiler.lm_head import chunk_tokens

    assert chunk_tokens(256000) == chunk_tokens(256000, "cuda") == 262  # Gemma: 64M logits per chunk
    assert chunk_tokens(128256) == 523
    assert chunk_tokens(49152) == 1024  # capped
    assert chunk_tokens(10**7) == 128  # floored
    assert chunk_tokens(49152, "cpu") == chunk_tokens(256000, torch.device("cpu")) == 128  # CPU caches


def test_the_trainers_eval_nll_is_the_scorers():
    """Evaluation's per-example response NLL (``row_nll``) and the profiler's scores are one computation: the same
    sums on the same model, whatever the batching and chunking."""
    from profiler.scoring import ScoreItem, TorchScorer
    from trainer_plugin.loss import row_nll

    model = tiny_model("gemma2").eval()
    batch = make_batch([12, 7, 15, 9], [3, 2, 10, 4], seed=7)
    items = []
    for i in range(4):
        n = int(batch["attention_mask"][i].sum())
        mask = (batch["labels"][i, :n] != -100).tolist()
        items.append(ScoreItem(f"e{i}", batch["input_ids"][i, :n].tolist(), mask))
    scored = {s.example_id: s for b in TorchScorer(model, max_tokens=32).score(items, progress=False) for s in b}
    nll, counts = row_nll(model, batch, chunk_tokens=5)
    for i in range(4):
        assert scored[f"e{i}"].n_tokens == int(counts[i])
        assert scored[f"e{i}"].nll_sum == pytest.approx(float(nll[i]), rel=1e-5)
