"""Rendering normalized examples to token ids and a response mask.

The tokenizer's chat template is used when it has one, else an Alpaca-style prompt. The response mask
covers the tokens of every assistant turn (its content and its end-of-turn marker), found from
character spans of the rendered text and the tokenizer's offset mapping, so it is exact for any
template that renders a conversation's prefix as a prefix of the whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from profiler.data.formats import Example
from profiler.errors import DataError, ModelError

# --template: the tokenizer's chat template when it has one (auto), always it (chat), or the Alpaca prompt.
TEMPLATES = ("auto", "chat", "alpaca")
ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


@dataclass
class RenderedExample:
    """Token ids with a mask of the response tokens (the ones scored and trained on)."""

    input_ids: list[int]
    response_mask: list[bool]
    truncated: bool = False

    @property
    def n_response_tokens(self) -> int:
        # The first token is never predicted, so it never counts as a response token.
        return int(sum(self.response_mask[1:]))

    @property
    def n_prompt_tokens(self) -> int:
        return len(self.input_ids) - self.n_response_tokens

    def labels(self) -> list[int]:
        """Hugging Face labels: the ids at response positions, -100 elsewhere (unshifted)."""
        return [t if m and i > 0 else -100 for i, (t, m) in enumerate(zip(self.input_ids, self.response_mask))]


@dataclass(frozen=True)
class RenderFailure:
    """Why an example could not be rendered for scoring: the ``status`` code and a sentence."""

    code: str
    reason: str


class Renderer:
    """Renders examples for one tokenizer.

    Args:
        tokenizer: a fast Hugging Face tokenizer (offsets are needed for the response mask).
        template: ``auto`` (chat template if the tokenizer has one), ``chat`` or ``alpaca``.
        max_length: the longest token sequence allowed.
        truncate: cut longer examples to ``max_length`` (marked ``truncated``) instead of rejecting them.
    """

    def __init__(self, tokenizer, template: str = "auto", max_length: int = 2048, truncate: bool = False):
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError("a fast tokenizer is needed (offset mapping locates the response tokens)")
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template == "chat" and not has_chat:
            raise ModelError("template 'chat' was asked for, but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.template = "chat" if template == "chat" or (template == "auto" and has_chat) else "alpaca"
        self.max_length = max_length
        self.truncate = truncate
        self._template = None  # the compiled chat template, once checked (False: use apply_chat_template)

    def render_text(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """The full text and the character spans of the assistant turns."""
        if self.template == "chat":
            return self._chat_text(messages)
        return self._alpaca_text(messages)

    def render(self, example: Example, *, source_file: str = "<input>", row: int = 0) -> RenderedExample:
        """Token ids and response mask for one example.

        Raises:
            DataError: ``too_long`` beyond ``max_length`` (unless truncating), ``no_response_tokens``
                when nothing is left to score.
        """
        (out,) = self.render_many([example.messages])
        if isinstance(out, RenderFailure):
            raise DataError(source_file, out.reason, code=out.code, row=row)
        return RenderedExample(out.input_ids.tolist(), out.response_mask.tolist(), out.truncated)

    def render_many(self, conversations: Sequence[list[dict[str, str]]]) -> list[RenderedExample | RenderFailure]:
        """Render a batch of conversations in one tokenizer call (the data stage's unit of work).

        Returns, per conversation, a :class:`RenderedExample` holding numpy arrays (int32 ids, bool mask), or the
        :class:`RenderFailure` that kept it from being scored.
        """
        texts = [self.render_text(m) for m in conversations]
        return [self._finish(ids, mask) for ids, mask in self._encode(texts)]

    def _encode(self, texts: list[tuple[str, list[tuple[int, int]]]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Token ids and response mask of each ``(text, assistant spans)``: a token is a response token when its
        first character lies in a span. One call of the Rust tokenizer for the batch (what the tokenizer's
        ``__call__`` runs, without special tokens, minus its per-call Python overhead)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            enc = self.tokenizer([t for t, _ in texts], add_special_tokens=False, return_offsets_mapping=True)
            out = []
            for (_, spans), ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
                starts = np.asarray([o[0] for o in offsets], dtype=np.int64)
                mask = np.zeros(len(ids), dtype=bool)
                for s, e in spans:
                    mask |= (starts >= s) & (starts < e)
                out.append((np.asarray(ids, dtype=np.int32), mask))
            return out
        encodings = backend.encode_batch([t for t, _ in texts], add_special_tokens=False)
        return [
            (np.asarray(e.ids, dtype=np.int32), _span_mask(e, spans, len(t))) for (t, spans), e in zip(texts, encodings)
        ]

    def _finish(self, ids: np.ndarray, mask: np.ndarray):
        """The length rules, on a rendered example."""
        truncated = False
        if len(ids) > self.max_length:
            if not self.truncate:
                reason = f"example has {len(ids)} tokens, more than max_length={self.max_length}"
                return RenderFailure("too_long", reason)
            ids, mask, truncated = ids[: self.max_length], mask[: self.max_length], True
        if not mask[1:].any():
            if truncated:
                return RenderFailure("too_long", "no response tokens left after truncation")
            return RenderFailure("no_response_tokens", "the response renders to no tokens")
        return RenderedExample(ids, mask, truncated)

    def _apply(self, messages, add_generation_prompt: bool = False) -> str:
        if self._template is None:
            self._template = _compiled_template(self.tokenizer) or False
        if self._template:
            return self._template(messages, add_generation_prompt)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def __getstate__(self) -> dict:
        # A compiled template does not pickle (the data stage sends the renderer to its worker processes).
        return {**self.__dict__, "_template": None}

    def _chat_text(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        try:
            full = self._apply(messages)
        except Exception:
            # Some templates (Gemma's) reject a system role: fold it into the first user turn, as is usual.
            messages = _fold_system(messages)
            full = self._apply(messages)
        spans, cursor = [], 0
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self._apply(messages[:k], add_generation_prompt=True)
            through = full if k + 1 == len(messages) else self._apply(messages[: k + 1])
            if through.startswith(before) and full.startswith(through):
                # Keep the end-of-turn marker, drop the whitespace after it.
                start, end = len(before), len(through.rstrip())
            else:  # a template that rewrites history: find the content itself
                start = full.find(m["content"], cursor)
                if start < 0:
                    raise ModelError("cannot locate an assistant turn in the chat template's output")
                end = start + len(m["content"])
                eos = self.tokenizer.eos_token or ""
                if eos and full.startswith(eos, end):
                    end += len(eos)
            spans.append((start, end))
            cursor = end
        return full, spans

    def _alpaca_text(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        system = " ".join(m["content"] for m in messages if m["role"] == "system") or ALPACA_SYSTEM
        text = (self.tokenizer.bos_token or "") + system + "\n\n"
        spans = []
        for m in messages:
            if m["role"] == "user":
                text += f"### Instruction:\n{m['content']}\n\n"
            elif m["role"] == "assistant":
                text += "### Response:\n"
                start = len(text)
                text += m["content"] + (self.tokenizer.eos_token or "")
                spans.append((start, len(text)))
                text += "\n\n"
        return text.rstrip("\n"), spans


def _first_token_at(enc, pos: int, text_len: int) -> int:
    """Index of the first token whose first character is at ``pos`` or later (offsets are in text order)."""
    for p in range(pos, text_len):
        t = enc.char_to_token(p)
        if t is not None:  # the token holding the first covered character at or after pos
            return t if enc.token_to_chars(t)[0] >= pos else t + 1
    return len(enc.ids)


def _span_mask(enc, spans: list[tuple[int, int]], text_len: int) -> np.ndarray:
    """The response mask of an encoding: tokens whose first character lies in a span, found at the spans' ends
    (a few lookups per turn, instead of converting every token's offsets)."""
    mask = np.zeros(len(enc.ids), dtype=bool)
    for s, e in spans:
        mask[_first_token_at(enc, s, text_len) : _first_token_at(enc, e, text_len)] = True
    return mask


_PROBES = (
    [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "Two?"},
        {"role": "assistant", "content": "2"},
    ],
)


def _compiled_template(tokenizer):
    """The tokenizer's chat template as a function ``(messages, add_generation_prompt) -> str``, calling the
    compiled Jinja template directly: ``apply_chat_template`` spends most of its time copying and checking its
    input. Used only when it renders probe conversations exactly as ``apply_chat_template`` does; else None."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        compiled = _compile_jinja_template(tokenizer.chat_template)
        kwargs = dict(tokenizer.special_tokens_map)

        def render(messages, add_generation_prompt: bool = False) -> str:
            return compiled.render(
                messages=messages, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **kwargs
            )

        def outcome(fn, messages, gen: bool) -> str | None:
            try:
                return fn(messages, gen)
            except Exception:  # a template may reject a conversation (Gemma's, a system role): both must
                return None

        def reference(messages, gen: bool) -> str:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

        probes = [(p[:n], gen) for p in _PROBES for n in range(1, len(p) + 1) for gen in (False, True)]
        if any(outcome(render, m, g) != outcome(reference, m, g) for m, g in probes):
            return None
    except Exception:  # another transformers, without this function
        return None
    return render


def pad_batch(rows: list[dict], pad_token_id: int) -> dict:
    """Right-pad rows of ``input_ids`` and ``labels`` (with -100) into tensors, with the attention mask."""
    import torch

    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), n), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    attn = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k], labels[i, :k], attn[i, :k] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def _fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest
