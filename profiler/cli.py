"""The `sftmix` console script: one subcommand per job, each a thin layer over a library function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import MISSING, fields

from profiler.errors import SftmixError


def _load_config(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise SftmixError(f"{path}: expected a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in cfg.items()}


def _parse_fields(items: list[str] | dict | None) -> dict[str, str]:
    if isinstance(items, dict):
        return items
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SftmixError(f"--field expects NAME=COLUMN, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _add_score_args(p: argparse.ArgumentParser) -> None:
    from profiler.score_run import ScoreConfig

    help_of = {f.name: f.metadata.get("help", "") for f in fields(ScoreConfig)}
    p.add_argument("--model", help=help_of["model"])
    p.add_argument("--data", action="append", help=help_of["data"] + " (repeatable)")
    p.add_argument("--out", help=help_of["out"])
    p.add_argument("--checkpoint", dest="checkpoints", action="append", help=help_of["checkpoints"] + " (repeatable)")
    p.add_argument("--format", help=help_of["format"])
    p.add_argument("--field", dest="fields", action="append", help="field-name override NAME=COLUMN (repeatable)")
    p.add_argument("--split", help=help_of["split"])
    p.add_argument("--template", choices=["auto", "chat", "alpaca"], help=help_of["template"])
    p.add_argument("--max-length", type=int, help=help_of["max_length"])
    p.add_argument("--truncate", action="store_true", default=None, help=help_of["truncate"])
    p.add_argument("--on-error", choices=["raise", "skip"], help=help_of["on_error"])
    p.add_argument("--backend", choices=["torch"], help=help_of["backend"])
    p.add_argument("--device", help=help_of["device"])
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help=help_of["dtype"])
    p.add_argument("--max-tokens", type=int, help=help_of["max_tokens"])
    p.add_argument("--max-batch-size", type=int, help=help_of["max_batch_size"])
    p.add_argument("--n-bins", type=int, help=help_of["n_bins"])
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="hide progress bars")
    p.add_argument("--config", help="YAML file of options (flags override it)")


def _score_config(args: argparse.Namespace):
    from profiler.score_run import ScoreConfig

    values = _load_config(args.config)
    for f in fields(ScoreConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    values["fields"] = _parse_fields(values.get("fields"))
    missing = [
        f.name
        for f in fields(ScoreConfig)
        if f.default is MISSING and f.default_factory is MISSING and not values.get(f.name)
    ]
    if missing:
        raise SftmixError("missing required option(s): " + ", ".join("--" + m.replace("_", "-") for m in missing))
    try:
        return ScoreConfig(**values)
    except (TypeError, ValueError) as e:
        raise SftmixError(str(e)) from e


def cmd_score(args: argparse.Namespace) -> int:
    from profiler.score_run import run_score

    out = run_score(_score_config(args))
    return _print_info(out)


def _print_info(path: str, as_json: bool = False) -> int:
    from profiler.table.reader import open_table

    with open_table(path) as t:
        s = t.summary()
    if as_json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    c = s["confidence"]
    print(f"table           {s['path']} (schema {s['schema_version']}, sftmix {s['sftmix_version']})")
    print(f"created         {s['created_at']}")
    print(f"reference model {s['reference_model']}  template: {s['template']}")
    print(f"examples        {s['examples']}  status: " + ", ".join(f"{k}={v}" for k, v in s["status"].items()))
    print("sources         " + ", ".join(f"{k}={v}" for k, v in s["sources"].items()))
    print(f"checkpoints     {s['checkpoints']}  scores: {s['scores']}")
    print("splits          " + (", ".join(f"{k}={v}" for k, v in s["splits"].items()) or "(none yet)"))
    if c["median"] is not None:
        print(f"confidence      min {c['min']:.4g}  median {c['median']:.4g}  max {c['max']:.4g}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    return _print_info(args.table, args.json)


def cmd_export(args: argparse.Namespace) -> int:
    from profiler.export import export_split

    n = export_split(args.table, args.output, split=args.split, fmt=args.format)
    print(f"wrote {n} examples ({args.split}) to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from profiler.demo import run_demo

    return run_demo(args)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sftmix", description="Profile SFT data confidence and train with SFTMix.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="score given checkpoints (or a model) on a dataset into a confidence table")
    _add_score_args(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("export", help="export a split with its confidence columns")
    p.add_argument("table")
    p.add_argument("--split", choices=["confident", "unconfident", "all"], default="all")
    p.add_argument("--format", choices=["jsonl", "parquet", "hf"], default="jsonl")
    p.add_argument("-o", "--output", required=True, help="output file (jsonl, parquet) or directory (hf)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="summarize a confidence table")
    p.add_argument("table")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    from profiler.demo import add_demo_args

    p = sub.add_parser("demo", help="score the packaged data with the packaged SmolLM2-135M and print the table")
    add_demo_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except SftmixError as e:
        print(f"sftmix {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
