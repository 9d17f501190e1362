"""Options: each one declared once, as a dataclass field, with its type, default, help, choices and range.

:func:`option` declares a field; :func:`check_options` (called from each config's ``__post_init__``) enforces
its rule for Python callers; :class:`OptionParser`, a ``transformers.HfArgumentParser``, turns the same fields
into flags (``--max-length`` and ``--max_length`` alike, ``--no-x`` for booleans), reads ``--config file.yaml``
(flags override it) and reports a bad value in one line, exit code 2, before any work starts.

Importing this module loads neither torch nor transformers' models (only its argument parser).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from profiler.errors import SftmixError

# Choice lists shared by the profiler's and the trainer's options.
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
DEVICE_TEXT = "auto, cpu, mps, cuda or cuda:N"
# transformers.SchedulerType's values (a test keeps this list equal to the installed transformers').
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)


class OptionError(SftmixError, ValueError):
    """An option value outside its allowed range or choices (a ValueError for Python callers)."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """The allowed values of one option: choices, bounds, a pattern, or a custom predicate."""

    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    pattern: str | None = None
    check: Callable[[Any], bool] | None = None
    describe: str | None = None

    def text(self) -> str:
        """The allowed values, as a user reads them ("an integer >= 1", "one of a, b")."""
        if self.describe:
            return self.describe
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        lo = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else None
        hi = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else None
        if lo and hi:
            left = "[" if self.ge is not None else "("
            right = "]" if self.le is not None else ")"
            a = self.ge if self.ge is not None else self.gt
            b = self.le if self.le is not None else self.lt
            return f"in {left}{a:g}, {b:g}{right}"
        return lo or hi or "valid"

    def allows(self, value: Any) -> bool:
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                return False
            if (self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt):
                return False
            if (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt):
                return False
        if self.pattern is not None and not re.fullmatch(self.pattern, str(value)):
            return False
        return self.check is None or bool(self.check(value))


class _Repeatable(argparse.Action):
    """``--data a b --data c`` -> ``[a, b, c]``; given on the command line, it replaces a ``--config`` value."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_sftmix_given", set())
        items = [] if self.dest not in seen else list(getattr(namespace, self.dest) or [])
        seen.add(self.dest)
        setattr(namespace, self.dest, items + list(values))


_RULE = "sftmix_rule"
_POSITIONAL = "sftmix_positional"
_FLAG = "sftmix_flag"


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    choices: Sequence | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    pattern: str | None = None,
    check: Callable[[Any], bool] | None = None,
    describe: str | None = None,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    positional: bool = False,
) -> Any:
    """A config field declaring everything about one option.

    Args:
        default, default_factory: as for :func:`dataclasses.field`; neither makes the option required.
        help: the flag's help text (the default and the allowed values are appended).
        choices, ge, gt, le, lt, pattern, check, describe: the rule a value must satisfy (``None`` is always
            allowed where it is the default). ``describe`` words a ``check`` for the error message.
        flag: the flag's name when it differs from the field's (``checkpoints`` -> ``checkpoint``).
        aliases: further spellings (``-o``).
        positional: a positional argument instead of a flag.
    """
    rule = Rule(tuple(choices) if choices is not None else None, ge, gt, le, lt, pattern, check, describe=describe)
    metadata = {"help": help, _RULE: rule, _POSITIONAL: positional, _FLAG: flag, "aliases": list(aliases)}
    if choices is not None:
        metadata["choices"] = list(choices)
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def flag_name(f: dataclasses.Field) -> str:
    """How the user spells a field: ``--max-length``, or the positional's name."""
    if f.metadata.get(_POSITIONAL):
        return f.name.upper()
    return "--" + (f.metadata.get(_FLAG) or f.name).replace("_", "-")


def _allows_none(f: dataclasses.Field) -> bool:
    return f.default is None


def check_options(obj: Any) -> None:
    """Enforce every field's rule on a config instance (call it first in ``__post_init__``).

    Raises:
        OptionError: one line naming the option, the value and what is allowed.
    """
    for f in dataclasses.fields(obj):
        if _RULE not in f.metadata:  # a plain field (e.g. TrainingArguments'): its own class checks it
            continue
        rule: Rule = f.metadata[_RULE]
        value = getattr(obj, f.name)
        if value is None:
            if _allows_none(f):
                continue
            raise OptionError(f"{flag_name(f)} is required")
        _check_type(f, value, _field_type(type(obj), f))
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if not rule.allows(v):
                raise OptionError(f"{flag_name(f)} {v!r}: must be {rule.text()}")


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    """A field's annotation, resolved in the module of the class that declares it (postponed annotations)."""
    if not isinstance(f.type, str):
        return f.type
    owner = next(k for k in cls.__mro__ if f.name in vars(k).get("__annotations__", {}))
    return eval(f.type, vars(sys.modules[owner.__module__]))  # noqa: S307 - the class's own annotation


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return origin or tp


def _check_type(f: dataclasses.Field, value: Any, hint: Any) -> None:
    kind = _base_type(hint)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, (list, tuple)),
        dict: lambda v: isinstance(v, dict),
    }.get(kind)
    if ok is not None and not ok(value):
        word = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)
        raise OptionError(f"{flag_name(f)} {value!r}: must be {word}")


def as_list(value: Any) -> list:
    """A list option's value from a flag, YAML or Python: one item or many."""
    if value is None:
        return []
    return [value] if isinstance(value, (str, Path)) else list(value)


def as_mapping(value: Any, name: str) -> dict[str, str]:
    """``NAME=VALUE`` items (flags) or a mapping (YAML, Python) -> a dict."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for item in as_list(value):
        if "=" not in str(item):
            raise OptionError(f"--{name} expects NAME=VALUE, got {item!r}")
        k, v = str(item).split("=", 1)
        out[k] = v
    return out


def _help_text(f: dataclasses.Field, rule: Rule | None) -> str:
    text = f.metadata.get("help", "")
    extra = []
    if rule is not None and rule.choices is None and rule.text() != "valid":
        extra.append(rule.text())
    return text + (f" ({'; '.join(extra)})" if extra else "")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends an option's default to its help, unless the help names one already or there is none to show (a
    required option, a default of None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.required or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def make_parser_class() -> type:
    """The parser class: HfArgumentParser with our metadata, one-line errors and ``--config`` YAML."""
    from transformers import HfArgumentParser
    from transformers.hf_argparser import string_to_bool

    class SftmixParser(HfArgumentParser):
        """Builds flags from option fields; errors are one line (``sftmix CMD: error: ...``), exit code 2."""

        def __init__(self, *args, dataclass_types=(), **kwargs):
            kwargs.setdefault("allow_abbrev", False)  # a typo is an error, never a guess
            kwargs.setdefault("formatter_class", _HelpFormatter)
            super().__init__(dataclass_types or [], *args, **kwargs)
            if dataclass_types:
                self.add_argument("--config", metavar="YAML", help="YAML file of options; flags override it")

        def _add_dataclass_arguments(self, dtype) -> None:
            """A class's fields as flags, under the headings of its ``help_groups`` (heading -> field names) in that
            order, then the other fields under its ``help_rest``; without ``help_groups``, as transformers does."""
            groups = getattr(dtype, "help_groups", None)
            if not groups:
                super()._add_dataclass_arguments(dtype)
                return
            hints = typing.get_type_hints(dtype)
            fields = {f.name: f for f in dataclasses.fields(dtype) if f.init}
            rest = [name for name in fields if all(name not in names for names in groups.values())]
            for heading, names in [*groups.items(), (dtype.help_rest, rest)]:
                group = self.add_argument_group(heading)
                for name in names:
                    field = fields[name]
                    field.type = hints[name]
                    self._parse_dataclass_field(group, field)

        @staticmethod
        def _parse_dataclass_field(parser, field: dataclasses.Field):
            if _RULE not in field.metadata:  # a plain dataclass field (e.g. TrainingArguments'): as transformers does
                HfArgumentParser._parse_dataclass_field(parser, field)
                return
            rule: Rule = field.metadata[_RULE]
            kind = _base_type(field.type)
            kwargs: dict[str, Any] = {"help": _help_text(field, rule)}
            if field.metadata.get(_POSITIONAL):
                if kind is list:
                    kwargs.update(nargs="*", type=str, default=None)
                parser.add_argument(field.name, type=kwargs.pop("type", kind), metavar=field.name.upper(), **kwargs)
                return
            flag = field.metadata.get(_FLAG) or field.name
            names = ["--" + flag.replace("_", "-"), "--" + flag, "--" + field.name.replace("_", "-"), "--" + field.name]
            names = list(dict.fromkeys(names + list(field.metadata.get("aliases", []))))
            default = None if field.default is dataclasses.MISSING else field.default
            if kind in (list, dict):  # repeatable: --data a --data b, or --data a b
                kwargs.update(action=_Repeatable, nargs="+", type=str, metavar=flag.upper())
                default = None
            elif kind is bool:  # --x, --x true|false, --no-x
                kwargs.update(nargs="?", const=True, type=string_to_bool, metavar="BOOL")
            else:
                kwargs.update(type=kind, metavar=flag.upper())
                if rule.choices is not None:
                    kwargs.update(choices=list(rule.choices), metavar="{" + ",".join(map(str, rule.choices)) + "}")
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            parser.add_argument(*names, dest=field.name, default=default, required=required, **kwargs)
            if kind is bool:
                parser.add_argument(
                    "--no-" + flag.replace("_", "-"),
                    "--no_" + flag,
                    dest=field.name,
                    action="store_false",
                    help=argparse.SUPPRESS,
                )

        def error(self, message: str):
            unknown = self._unknown_flags()
            if unknown:  # a misspelt flag explains the rest ("required: --model" after --modle)
                message = "unrecognized arguments: " + " ".join(unknown)
            sys.stderr.write(f"{self.prog}: error: {message}\n")
            sys.exit(2)

        def parse_known_args(self, args=None, namespace=None):
            self._argv = list(sys.argv[1:] if args is None else args)
            ns, extras = super().parse_known_args(args, namespace)
            if extras and self.dataclass_types:  # a subcommand owns every argument after its name
                self.error("unrecognized arguments: " + " ".join(extras))
            return ns, extras

        def _unknown_flags(self) -> list[str]:
            known = [s for a in self._actions for s in a.option_strings]
            out = []
            for arg in getattr(self, "_argv", []):
                name = arg.split("=", 1)[0]
                if not arg.startswith("--") or name in known or name == "--":
                    continue
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
                out.append(f"{name} (did you mean {close[0]}?)" if close else name)
            return out

        def apply_config(self, path: str) -> None:
            """Use a YAML file's options as this parser's defaults (so flags given on the command line win)."""
            import yaml

            try:
                with open(path, encoding="utf-8") as fh:
                    loaded = yaml.safe_load(fh) or {}
            except OSError as e:
                self.error(f"--config {path}: {e.strerror or e}")
            except yaml.YAMLError as e:
                self.error(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})")
            if not isinstance(loaded, dict):
                self.error(f"--config {path}: expected a mapping of option names to values")
            dests = {a.dest: a for a in self._actions if a.dest not in ("help", "config")}
            values = {}
            for key, value in loaded.items():
                name = str(key).replace("-", "_").lstrip("_")
                if name not in dests:
                    close = difflib.get_close_matches(name, list(dests), n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    self.error(f"--config {path}: unknown option {key!r}{hint}")
                values[name] = value
            for name, value in values.items():
                action = dests[name]
                action.required = False
                if isinstance(value, dict):  # NAME: VALUE mappings (e.g. field renames)
                    value = [f"{k}={v}" for k, v in value.items()]
                action.default = value

        def apply_config_args(self, args: Sequence[str]) -> None:
            """Apply ``--config FILE`` (or ``--config=FILE``) when it is among ``args``."""
            args = list(args)
            for i, a in enumerate(args):
                if a == "--config" and i + 1 < len(args):
                    self.apply_config(args[i + 1])
                elif a.startswith("--config="):
                    self.apply_config(a.split("=", 1)[1])

    return SftmixParser


def build(classes: Sequence[type], ns: argparse.Namespace) -> list[Any]:
    """One config per class from a parsed namespace; a rule broken raises :class:`OptionError`."""
    out = []
    for cls in classes:
        values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(ns, f.name)}
        values = {k: v for k, v in values.items() if v is not None or _field(cls, k).default is None}
        try:
            out.append(cls(**values))
        except OptionError:
            raise
        except ValueError as e:  # a plain field's own check (e.g. TrainingArguments'): one line too
            raise OptionError(" ".join(str(e).split())) from e
    return out


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)
