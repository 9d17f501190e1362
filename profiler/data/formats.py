"""SFT record formats and their normalization to chat messages.

Every supported format becomes a list of ``{"role", "content"}`` messages (roles ``system``, ``user``,
``assistant``). Messages are the canonical form: they define the example id and are what any
tokenizer re-renders, so a reference and a target model with different templates see the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from profiler.errors import DataError

# Default field names per format; users override them with ``fields={"instruction": "question", ...}``.
FORMATS: dict[str, dict[str, str]] = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output", "system": "system"},
    "prompt_completion": {"prompt": "prompt", "completion": "completion", "system": "system"},
    "chat": {"messages": "messages", "role": "role", "content": "content"},
    "sharegpt": {"conversations": "conversations", "role": "from", "content": "value"},
}

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}
CHAT_ROLES = {"system", "user", "assistant"}


@dataclass
class Example:
    """A normalized example: its messages, plus the record it came from."""

    messages: list[dict[str, str]]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        """The user-facing prompt: the instruction for one turn, a transcript before the last answer otherwise."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        before = [m for m in self.messages[:last] if m["role"] != "system"]
        if len(before) == 1:
            return before[0]["content"]
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in before)

    @property
    def response_text(self) -> str:
        """The last assistant message."""
        return [m for m in self.messages if m["role"] == "assistant"][-1]["content"]


def detect_format(record: Mapping[str, Any], fields: Mapping[str, str] | None = None) -> str | None:
    """Guess a record's format from its keys; None when nothing fits."""
    fields = fields or {}
    keys = {k for k, v in record.items() if v is not None}  # a null column of a mixed-format file is absent

    def has(fmt: str, name: str) -> bool:
        return fields.get(name, FORMATS[fmt][name]) in keys

    if has("chat", "messages"):
        return "chat"
    if has("sharegpt", "conversations"):
        return "sharegpt"
    if has("alpaca", "instruction") and has("alpaca", "output"):
        return "alpaca"
    if has("prompt_completion", "prompt") and (has("prompt_completion", "completion") or "response" in keys):
        return "prompt_completion"
    # Loose matches, so that a row missing its answer is reported as such, not as an unknown format.
    if has("alpaca", "instruction"):
        return "alpaca"
    if has("prompt_completion", "prompt"):
        return "prompt_completion"
    return None


class _Ctx:
    """Where a record came from, for error messages."""

    def __init__(self, source_file: str, row: int, line: int | None):
        self.source_file, self.row, self.line = source_file, row, line

    def error(self, field_name: str | None, reason: str, code: str = "invalid_field") -> DataError:
        return DataError(self.source_file, reason, code=code, row=self.row, field=field_name, line=self.line)

    def string(self, record: Mapping[str, Any], name: str, *, required: bool = True, allow_empty: bool = False) -> str:
        if name not in record or record[name] is None:
            if required:
                raise self.error(name, "missing required field", code="missing_field")
            return ""
        value = record[name]
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {type(value).__name__}", code="not_a_string")
        if not allow_empty and required and not value.strip():
            raise self.error(name, "is empty", code="empty_field")
        return value


def _alpaca(rec: Mapping[str, Any], f: Mapping[str, str], ctx: _Ctx) -> list[dict[str, str]]:
    instruction = ctx.string(rec, f["instruction"])
    extra = ctx.string(rec, f["input"], required=False)
    output = ctx.string(rec, f["output"])
    system = ctx.string(rec, f["system"], required=False)
    user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
    msgs = [{"role": "system", "content": system}] if system.strip() else []
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _prompt_completion(rec: Mapping[str, Any], f: Mapping[str, str], ctx: _Ctx) -> list[dict[str, str]]:
    completion_key = f["completion"]
    if completion_key not in rec and "response" in rec and completion_key == "completion":
        completion_key = "response"
    prompt, completion = rec.get(f["prompt"]), rec.get(completion_key)
    if isinstance(prompt, list) or isinstance(completion, list):
        # Conversational prompt-completion (TRL style): both sides are message lists.
        p = _messages(prompt or [], "role", "content", CHAT_ROLES_MAP, ctx, f["prompt"], need_assistant=False)
        c = _messages(completion or [], "role", "content", CHAT_ROLES_MAP, ctx, completion_key)
        return p + c
    system = ctx.string(rec, f["system"], required=False)
    msgs = [{"role": "system", "content": system}] if system.strip() else []
    return msgs + [
        {"role": "user", "content": ctx.string(rec, f["prompt"])},
        {"role": "assistant", "content": ctx.string(rec, completion_key)},
    ]


CHAT_ROLES_MAP = {r: r for r in CHAT_ROLES}


def _messages(
    items: Any,
    role_key: str,
    content_key: str,
    roles: Mapping[str, str],
    ctx: _Ctx,
    field_name: str,
    *,
    need_assistant: bool = True,
) -> list[dict[str, str]]:
    if not isinstance(items, list):
        raise ctx.error(field_name, f"expected a list of messages, got {type(items).__name__}", code="not_a_list")
    out = []
    for i, m in enumerate(items):
        where = f"{field_name}[{i}]"
        if not isinstance(m, Mapping):
            raise ctx.error(where, f"expected a message object, got {type(m).__name__}", code="not_an_object")
        role = m.get(role_key)
        if role not in roles:
            raise ctx.error(f"{where}.{role_key}", f"unknown role {role!r}; expected one of {sorted(roles)}")
        content = m.get(content_key)
        if not isinstance(content, str):
            kind = "missing" if content is None else f"a {type(content).__name__}, not a string"
            raise ctx.error(f"{where}.{content_key}", f"content is {kind}", code="not_a_string")
        out.append({"role": roles[role], "content": content})
    if need_assistant:
        answers = [i for i, m in enumerate(out) if m["role"] == "assistant"]
        if not answers:
            raise ctx.error(field_name, "has no assistant message to score", code="no_response")
        for i in answers:
            if not out[i]["content"].strip():
                raise ctx.error(f"{field_name}[{i}].{content_key}", "assistant message is empty", code="empty_field")
        if answers[0] == 0:
            raise ctx.error(field_name, "starts with an assistant message; there is no prompt", code="no_prompt")
    return out


def _chat(rec: Mapping[str, Any], f: Mapping[str, str], ctx: _Ctx) -> list[dict[str, str]]:
    if f["messages"] not in rec:
        raise ctx.error(f["messages"], "missing required field", code="missing_field")
    return _messages(rec[f["messages"]], f["role"], f["content"], CHAT_ROLES_MAP, ctx, f["messages"])


def _sharegpt(rec: Mapping[str, Any], f: Mapping[str, str], ctx: _Ctx) -> list[dict[str, str]]:
    if f["conversations"] not in rec:
        raise ctx.error(f["conversations"], "missing required field", code="missing_field")
    return _messages(rec[f["conversations"]], f["role"], f["content"], SHAREGPT_ROLES, ctx, f["conversations"])


_NORMALIZERS = {"alpaca": _alpaca, "prompt_completion": _prompt_completion, "chat": _chat, "sharegpt": _sharegpt}


def normalize_record(
    record: Mapping[str, Any],
    fmt: str,
    *,
    fields: Mapping[str, str] | None = None,
    source_file: str = "<input>",
    row: int = 0,
    line: int | None = None,
) -> Example:
    """Turn one record of format ``fmt`` into an :class:`Example`.

    Raises:
        DataError: naming the file, row and field when the record does not fit the format.
    """
    if fmt not in _NORMALIZERS:
        raise DataError(source_file, f"unknown format '{fmt}'; expected one of {sorted(_NORMALIZERS)}")
    names = {**FORMATS[fmt], **{k: v for k, v in (fields or {}).items() if k in FORMATS[fmt]}}
    ctx = _Ctx(source_file, row, line)
    return Example(messages=_NORMALIZERS[fmt](record, names, ctx), record=dict(record))
