"""Config dataclasses to argparse flags and back: one place for flag names, types and help texts.

Each dataclass field becomes ``--field-name``; ``bool`` fields get ``--x``/``--no-x``, ``list[str]`` fields
are repeatable, ``dict[str, str]`` fields take ``NAME=VALUE`` repeatedly. ``--config file.yaml`` supplies
any field; flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

import yaml

from profiler.errors import SftmixError


def _base_type(tp: Any) -> Any:
    """``int | None`` -> ``int``; ``list[str]`` -> ``list``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return origin or tp


def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type, flag_names: dict[str, str] | None = None, *, add_config: bool = True
) -> None:
    """Add one flag per field of ``cls`` (all default to None, so unset flags can be told apart)."""
    flag_names = flag_names or {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + flag_names.get(f.name, f.name.replace("_", "-"))
        kind = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if f.default is not dataclasses.MISSING and f.default is not None and kind is not bool:
            help_text += f" (default: {f.default})"
        choices = f.metadata.get("choices")
        if kind is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text + f" (default: {f.default})",
            )
        elif kind in (list, dict):
            parser.add_argument(flag, dest=f.name, action="append", default=None, help=help_text + " (repeatable)")
        else:
            parser.add_argument(flag, dest=f.name, type=kind, choices=choices, default=None, help=help_text)
    if add_config:
        parser.add_argument("--config", help="YAML file of options; flags override it")


def _as_dict(items: Any, name: str) -> dict[str, str]:
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items or []:
        if "=" not in str(item):
            raise SftmixError(f"--{name.replace('_', '-')} expects NAME=VALUE, got {item!r}")
        k, v = str(item).split("=", 1)
        out[k] = v
    return out


def build_config(cls: type, args: argparse.Namespace) -> Any:
    """The config from ``--config`` (if any) overridden by the flags that were given."""
    return build_configs([cls], args)[0]


def build_configs(classes: list[type], args: argparse.Namespace) -> list[Any]:
    """One config per class from the same flags and ``--config`` file (whose keys may belong to any of them)."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        with open(args.config, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise SftmixError(f"{args.config}: expected a mapping of option names to values")
        values = {k.replace("-", "_"): v for k, v in loaded.items()}
        known = {f.name for cls in classes for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SftmixError(f"{args.config}: unknown option(s) {unknown}")
    return [_build_one(cls, args, values) for cls in classes]


def _build_one(cls: type, args: argparse.Namespace, file_values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in file_values.items() if k in names}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
        if f.name in values and _base_type(hints[f.name]) is dict:
            values[f.name] = _as_dict(values[f.name], f.name)
        if f.name in values and _base_type(hints[f.name]) is list and isinstance(values[f.name], str):
            values[f.name] = [values[f.name]]
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if not values.get(n)]
    if missing:
        raise SftmixError("missing required option(s): " + ", ".join("--" + m.replace("_", "-") for m in missing))
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise SftmixError(str(e)) from e
