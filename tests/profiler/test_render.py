"""Rendering: the response mask covers exactly the assistant turns (content and end-of-turn marker)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from profiler.data import Renderer
from profiler.data.formats import Example
from profiler.errors import DataError

MULTI = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello there."},
    {"role": "user", "content": "How are you?"},
    {"role": "assistant", "content": "Fine, thanks."},
]


def response_pieces(tok, rendered) -> list[str]:
    """Decoded runs of consecutive response tokens."""
    runs, cur = [], []
    for t, m in zip(rendered.input_ids, rendered.response_mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


def test_chat_template_mask_covers_every_assistant_turn(chat_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    r = Renderer(tok)
    assert r.template == "chat"
    out = r.render(Example(MULTI))
    assert response_pieces(tok, out) == ["Hello there.<|im_end|>", "Fine, thanks.<|im_end|>"]
    assert tok.decode(out.input_ids) == tok.apply_chat_template(MULTI, tokenize=False)
    assert out.n_response_tokens + out.n_prompt_tokens == len(out.input_ids)
    labels = out.labels()
    assert sum(t != -100 for t in labels) == out.n_response_tokens


def test_alpaca_fallback_without_chat_template(plain_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(plain_tokenizer_dir)
    r = Renderer(tok)
    assert r.template == "alpaca"
    out = r.render(Example([{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]))
    text = tok.decode(out.input_ids)
    assert text.startswith("<s>Below is an instruction")
    assert "### Instruction:\nSay hello.\n\n### Response:\n" in text
    assert response_pieces(tok, out) == ["Hello!</s>"]


def test_forced_template_choices(chat_tokenizer_dir, plain_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    assert Renderer(tok, template="alpaca").template == "alpaca"
    from profiler.errors import ModelError

    with pytest.raises(ModelError, match="no chat template"):
        Renderer(AutoTokenizer.from_pretrained(plain_tokenizer_dir), template="chat")


def test_too_long_and_truncation(chat_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    ex = Example([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 50}])
    full = Renderer(tok).render(ex)
    with pytest.raises(DataError, match=r"data.jsonl, row 4: example has \d+ tokens, more than max_length=40") as e:
        Renderer(tok, max_length=40).render(ex, source_file="data.jsonl", row=4)
    assert e.value.code == "too_long"
    cut = Renderer(tok, max_length=40, truncate=True).render(ex)
    assert cut.truncated and len(cut.input_ids) == 40
    assert cut.input_ids == full.input_ids[:40]
    with pytest.raises(DataError, match="no response tokens left after truncation"):
        Renderer(tok, max_length=5, truncate=True).render(ex)


def test_template_without_system_role_folds_it(chat_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    # A Gemma-like template that refuses the system role.
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    out = Renderer(tok).render(Example(MULTI))
    assert "Be brief.\n\nHi" in tok.decode(out.input_ids)
    assert response_pieces(tok, out) == ["Hello there.<|im_end|>", "Fine, thanks.<|im_end|>"]


GEMMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}],
    MULTI,
    [{"role": "user", "content": "日本語は？"}, {"role": "assistant", "content": "はい、少し。 😀 ü ß"}],
    [{"role": "user", "content": "  spaces  "}, {"role": "assistant", "content": "\n\nnew lines\n"}],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b c"},
        {"role": "user", "content": "d"},
        {"role": "assistant", "content": "e\tf"},
        {"role": "user", "content": "g"},
        {"role": "assistant", "content": "ok 🚀🚀"},
    ],
]


@pytest.fixture(scope="module")
def metaspace_tokenizer(tmp_path_factory):
    """A SentencePiece-style (Metaspace) tokenizer with a Gemma-like template: no system role, '▁' for spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    specials = ["<unk>", "<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    corpus = [m["content"] for c in CONVERSATIONS for m in c] * 20 + ["user model system hello there"] * 20
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=specials + bytes_))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.chat_template = GEMMA_LIKE_TEMPLATE
    return tok


def _reference(tok, renderer, messages):
    """The rule, one token at a time: a response token's first character lies in an assistant turn's span."""
    text, spans = renderer.render_text(messages)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(s <= start < e for s, e in spans) for start, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask, text


@pytest.mark.parametrize("kind", ["chatml", "metaspace", "alpaca"])
def test_batch_rendering_equals_the_per_token_rule(kind, chat_tokenizer_dir, plain_tokenizer_dir, metaspace_tokenizer):
    tok = {
        "chatml": lambda: AutoTokenizer.from_pretrained(chat_tokenizer_dir),
        "metaspace": lambda: metaspace_tokenizer,
        "alpaca": lambda: AutoTokenizer.from_pretrained(plain_tokenizer_dir),
    }[kind]()
    fast = Renderer(tok)
    slow = Renderer(tok)
    slow._template = False  # apply_chat_template itself: the compiled template must render the same text
    outs = fast.render_many(CONVERSATIONS)
    for messages, out in zip(CONVERSATIONS, outs):
        ids, mask, text = _reference(tok, slow, messages)
        assert fast.render_text(messages) == slow.render_text(messages)
        assert out.input_ids.tolist() == ids and out.response_mask.tolist() == mask, text
        assert any(mask)
    if kind == "chatml":
        assert fast._template, "ChatML's compiled template should pass the probes"
