"""The scored tokens of a rendered example: their positions, their decoded text, and the response on its own.

A scored token is a response token at position 1 or later (position 0 has nothing to predict it): the tokens
whose NLLs add up to an example's ``nll_sum``, in position order.

The text of each token is its share of the decoded response, so the texts joined give the response exactly as
the tokenizer decodes it (special tokens such as ``<|im_end|>`` included). Decoding token by token alone reads
wrong for two kinds of tokenizer: SentencePiece ones that strip the leading space of a decoded text (Llama 2's
``▁the`` alone decodes to ``the``), and byte-level BPE ones whose tokens split a multi-byte character (SmolLM2's
``'Ġæ', 'Ĺ', '¥'`` alone decode to ``' �', '�', '�'``). So each token is decoded after the token before it, and a
character whose bytes span several tokens goes to the token that completes it: ``' ', '', '日'``. Byte-level
markers read as text (``Ġthe`` is ``' the'``, ``Ċ`` is ``'\\n'``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"  # what decoding gives for the bytes of an unfinished character
# Tokens decoded in one window before it restarts at the last complete token: keeps decoding linear in length.
_WINDOW = 8


def scored_positions(response_mask: Sequence[bool]) -> list[int]:
    """Positions of the scored tokens: response tokens after position 0, in order."""
    return [t for t in range(1, len(response_mask)) if response_mask[t]]


def scored_token_ids(input_ids: Sequence[int], response_mask: Sequence[bool]) -> list[int]:
    """The ids of the scored tokens, in order."""
    return [int(input_ids[t]) for t in scored_positions(response_mask)]


def _decoder(tokenizer) -> Callable[[list[int]], str]:
    """Token ids -> text, special tokens kept, with no clean-up (which would not be prefix-stable)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _run_texts(decode: Callable[[list[int]], str], context: list[int], run: list[int]) -> list[str]:
    """The text of each token of ``run`` (consecutive tokens), decoded after the ``context`` tokens before it."""
    seq = context + run
    start, base, given = 0, decode(context), 0  # the window seq[start:], its decoded text so far, text given out
    out = []
    for k in range(len(context), len(seq)):
        text = decode(seq[start : k + 1])
        new = text[len(base) :]
        last = k + 1 == len(seq)
        ready = new if last else new.rstrip(REPLACEMENT)  # an unfinished character waits for its last byte
        out.append(ready[given:])
        if len(ready) < len(new):
            given = len(ready)
            continue
        given = 0
        if k + 1 - start >= _WINDOW:  # restart the window at this token, whose text is complete
            start, base = k, decode(seq[k : k + 1])
        else:
            base = text
    return out


def token_texts(tokenizer, input_ids: Sequence[int], response_mask: Sequence[bool]) -> list[str]:
    """The decoded text of each scored token (see the module docstring): same length and order as its NLLs."""
    decode = _decoder(tokenizer)
    positions = scored_positions(response_mask)
    out: list[str] = []
    i = 0
    while i < len(positions):  # each run of consecutive positions (an assistant turn) after the token before it
        j = i
        while j + 1 < len(positions) and positions[j + 1] == positions[j] + 1:
            j += 1
        first = positions[i]
        run = [int(t) for t in input_ids[first : positions[j] + 1]]
        out += _run_texts(decode, [int(input_ids[first - 1])], run)
        i = j + 1
    return out


def start_tokens(tokenizer) -> list[int]:
    """The ids a tokenizer puts before a text by default: its BOS for Llama or Gemma, none for GPT-2, Qwen or
    SmolLM2."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i]
    return []
