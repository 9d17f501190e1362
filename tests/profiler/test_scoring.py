"""The torch scorer: exact against the model's own loss, and independent of batch composition."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from profiler.data import Renderer
from profiler.data.formats import Example
from profiler.hf import causal_lm_parts
from profiler.lm_head import token_nll
from profiler.scoring import ScoreItem, TorchScorer, token_budget_batches
from tests.conftest import build_tiny_model

WORDS = [
    "the",
    "a",
    "permit",
    "building",
    "time",
    "weeks",
    "hello",
    "machine",
    "think",
    "blue",
    "sky",
    "one",
    "two",
    "three",
    "AI",
    "science",
]


def make_items(tokenizer_dir, n=12, seed=0):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = random.Random(seed)
    renderer = Renderer(tok)
    items = []
    for i in range(n):
        msgs = [
            {"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 30)))},
            {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(1, 40)))},
        ]
        if i % 3 == 0:  # some multi-turn examples
            msgs += [{"role": "user", "content": "and?"}, {"role": "assistant", "content": rng.choice(WORDS)}]
        r = renderer.render(Example(msgs))
        items.append(ScoreItem(f"ex{i}", r.input_ids, r.response_mask))
    return tok, items


def reference_mean_nll(model, item) -> float:
    """The model's own loss on one example, with -100 outside the response (as any HF training would)."""
    ids = torch.tensor([list(item.input_ids)])
    labels = ids.clone()
    mask = torch.tensor([list(item.response_mask)])
    labels[~mask] = -100
    with torch.no_grad():
        return model(input_ids=ids, labels=labels).loss.item()


@pytest.mark.parametrize("kind,tie", [("llama", False), ("llama", True), ("gemma2", False), ("qwen2", False)])
def test_mean_nll_equals_model_loss(tmp_path, chat_tokenizer_dir, kind, tie):
    path = build_tiny_model(kind, chat_tokenizer_dir, tmp_path / kind, tie=tie)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok, items = make_items(chat_tokenizer_dir)
    scorer = TorchScorer(model, max_tokens=256, chunk_tokens=7, pad_token_id=tok.pad_token_id)
    scores = {s.example_id: s for batch in scorer.score(items, progress=False) for s in batch}
    assert set(scores) == {it.example_id for it in items}
    for it in items:
        s = scores[it.example_id]
        assert s.n_tokens == sum(it.response_mask[1:])
        assert s.mean_nll == pytest.approx(reference_mean_nll(model, it), abs=1e-5, rel=1e-5)


def test_scores_do_not_depend_on_batch_composition(tiny_llama, chat_tokenizer_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    tok, items = make_items(chat_tokenizer_dir, n=16, seed=1)
    alone = {it.example_id: TorchScorer(model).score_batch([it])[0] for it in items}
    for max_tokens, chunk, seed in [(64, 3, 0), (300, 4096, 1), (100000, 50, 2)]:
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        scorer = TorchScorer(model, max_tokens=max_tokens, chunk_tokens=chunk, pad_token_id=tok.pad_token_id)
        for batch in scorer.score(shuffled, progress=False):
            for s in batch:
                ref = alone[s.example_id]
                assert s.n_tokens == ref.n_tokens
                assert s.mean_nll == pytest.approx(ref.mean_nll, abs=1e-5)


def test_tokens_after_the_last_response_token_are_not_run(tiny_llama, chat_tokenizer_dir):
    from profiler.scoring.torch_backend import needed_tokens

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    _, items = make_items(chat_tokenizer_dir, n=4, seed=3)
    # A response followed by 5 more prompt tokens (as if a user turn came last): they are cut, the score stays.
    it = items[0]
    tail = ScoreItem("tail", list(it.input_ids) + [5, 6, 7, 8, 9], list(it.response_mask) + [False] * 5)
    cut = needed_tokens(tail)
    last = max(i for i, m in enumerate(it.response_mask) if m)
    assert len(cut.input_ids) == last + 1 and list(cut.input_ids) == list(it.input_ids[: last + 1])
    assert needed_tokens(cut) is cut
    got = TorchScorer(model).score_batch([tail, *items[1:]])[0]
    assert got.n_tokens == sum(it.response_mask[1:])
    assert got.mean_nll == pytest.approx(reference_mean_nll(model, tail), abs=1e-5)
    # The embedding pass pools every token, the cut ones included.
    with torch.no_grad():
        full = model(input_ids=torch.tensor([tail.input_ids]), output_hidden_states=True).hidden_states[-1]
    vec = TorchScorer(model).score_batch([tail], embed=True)[0].embedding
    np.testing.assert_allclose(vec, full[0].mean(0).numpy(), atol=1e-5)


def test_head_matches_model_logits_with_softcapping(tmp_path, chat_tokenizer_dir):
    path = build_tiny_model("gemma2", chat_tokenizer_dir, tmp_path / "g")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    backbone, head = causal_lm_parts(model)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        mine = head(backbone(input_ids=ids).last_hidden_state)
    assert logits.abs().max() <= 2.0 + 1e-6  # softcapping is active
    torch.testing.assert_close(mine, logits, atol=1e-5, rtol=1e-5)
    # Chunked NLL equals a full log-softmax.
    h = torch.randn(10, 64)
    tgt = torch.randint(0, logits.shape[-1], (10,))
    full = -torch.log_softmax(head(h).float(), -1).gather(1, tgt[:, None]).squeeze(1)
    torch.testing.assert_close(token_nll(head, h, tgt, chunk_tokens=3), full, atol=1e-5, rtol=1e-5)


def test_token_budget_batches():
    lengths = [5, 50, 20, 20, 7, 300, 1]
    batches = token_budget_batches(lengths, max_tokens=60)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5]  # the longest first, alone even though over budget
    for b in batches[1:]:
        assert max(lengths[i] for i in b) * len(b) <= 60
    assert all(len(b) <= 2 for b in token_budget_batches(lengths, max_tokens=10**6, max_batch_size=2))
    with pytest.raises(ValueError):
        token_budget_batches(lengths, 0)


@pytest.mark.parametrize("kind", ["llama", "gemma2", "qwen2"])
def test_shared_prefix_reuse_is_exact(tmp_path, chat_tokenizer_dir, kind):
    path = build_tiny_model(kind, chat_tokenizer_dir, tmp_path / kind)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok, items = make_items(chat_tokenizer_dir, n=10, seed=3)
    shared = TorchScorer(model, max_tokens=100000, pad_token_id=tok.pad_token_id)
    assert shared._shared_prefix(items) >= 20  # the template's system prompt and user header
    plain = TorchScorer(model, max_tokens=100000, pad_token_id=tok.pad_token_id, share_prefix=False)
    for a, b in zip(shared.score_batch(items), plain.score_batch(items)):
        assert a.n_tokens == b.n_tokens
        assert a.mean_nll == pytest.approx(b.mean_nll, abs=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_embeddings_are_mean_pooled_final_hidden_states(tmp_path, chat_tokenizer_dir, kind):
    """Same pass as the score, independent of batching and of prefix sharing, equal to a plain forward's mean."""
    path = build_tiny_model(kind, chat_tokenizer_dir, tmp_path / kind)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok, items = make_items(chat_tokenizer_dir, n=10, seed=4)
    backbone, _ = causal_lm_parts(model)
    with torch.no_grad():
        ref = {
            it.example_id: backbone(input_ids=torch.tensor([list(it.input_ids)])).last_hidden_state[0].mean(0)
            for it in items
        }
    for share in (True, False):
        scorer = TorchScorer(model, max_tokens=300, pad_token_id=tok.pad_token_id, share_prefix=share)
        plain = {s.example_id: s for b in scorer.score(items, progress=False) for s in b}
        embedded = {s.example_id: s for b in scorer.score(items, progress=False, embed=True) for s in b}
        for it in items:
            e = embedded[it.example_id]
            assert e.embedding.dtype == np.float32 and e.embedding.shape == (model.config.hidden_size,)
            np.testing.assert_allclose(e.embedding, ref[it.example_id].numpy(), atol=1e-5, rtol=1e-5)
            assert e.nll_sum == pytest.approx(plain[it.example_id].nll_sum, abs=1e-6)
            assert plain[it.example_id].embedding is None
