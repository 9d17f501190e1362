"""The `sftmix` console script: one subcommand per job, each a thin layer over a library function."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from profiler.config_cli import add_dataclass_args, build_config, build_configs
from profiler.errors import SftmixError


def _score_config(args: argparse.Namespace):
    from profiler.score_run import ScoreConfig

    return build_config(ScoreConfig, args)


def cmd_profile(args: argparse.Namespace) -> int:
    from profiler.finetune import FinetuneConfig
    from profiler.profile_run import run_profile
    from profiler.score_run import ScoreConfig

    score_cfg, ft_cfg = build_configs([ScoreConfig, FinetuneConfig], args)
    if score_cfg.checkpoints:
        raise SftmixError("profile takes --checkpoints-from DIR; --checkpoint belongs to `sftmix score`")
    out = run_profile(score_cfg, ft_cfg, checkpoints_from=args.checkpoints_from)
    return print_info(out)


def cmd_train(args: argparse.Namespace) -> int:
    from trainer_plugin.config import TrainConfig
    from trainer_plugin.train import run_train

    out = run_train(build_config(TrainConfig, args))
    print(f"trained model saved to {out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from profiler.score_run import run_score

    out = run_score(_score_config(args))
    return print_info(out)


def print_info(path: str, as_json: bool = False) -> int:
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
    if s.get("stage_seconds"):
        print("stage times     " + ", ".join(f"{k} {v:.1f}s" for k, v in s["stage_seconds"].items()))
    if c["median"] is not None:
        print(f"confidence      min {c['min']:.4g}  median {c['median']:.4g}  max {c['max']:.4g}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    return print_info(args.table, args.json)


def cmd_export(args: argparse.Namespace) -> int:
    from profiler.export import export_split

    n = export_split(args.table, args.output, split=args.split, fmt=args.format)
    print(f"wrote {n} examples ({args.split}) to {args.output}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from profiler.table.compare import compare_tables

    cmp = compare_tables(args.a, args.b)
    if args.json:
        print(json.dumps(cmp.to_dict(args.flips), indent=2, default=str))
    else:
        print(cmp.text(args.flips))
    if args.flips_out:
        cmp.flips.write_ndjson(args.flips_out)
        print(f"wrote {cmp.flips.height} flipped examples to {args.flips_out}", file=sys.stderr)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from profiler.shards import merge_parts

    out = merge_parts(
        args.out, args.parts or None, n_bins=args.n_bins, projection=args.projection, projection_seed=args.seed
    )
    return print_info(str(out))


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboard.launch import run_dashboard

    return run_dashboard(args.table, port=args.port, host=args.host, compare=args.compare)


def cmd_demo(args: argparse.Namespace) -> int:
    from profiler.demo import run_demo

    return run_demo(args)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sftmix", description="Profile SFT data confidence and train with SFTMix.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    from profiler.score_run import ScoreConfig

    p = sub.add_parser("score", help="score given checkpoints (or a model) on a dataset into a confidence table")
    add_dataclass_args(p, ScoreConfig, {"checkpoints": "checkpoint", "data": "data", "fields": "field"})
    p.set_defaults(func=cmd_score)

    from profiler.finetune import FinetuneConfig

    p = sub.add_parser("profile", help="fine-tune the reference model, score each checkpoint, write the table")
    add_dataclass_args(p, ScoreConfig, {"checkpoints": "checkpoint", "fields": "field"})
    add_dataclass_args(p, FinetuneConfig, add_config=False)
    p.add_argument("--checkpoints-from", help="score the checkpoints in this directory instead of fine-tuning")
    p.set_defaults(func=cmd_profile)

    from trainer_plugin.config import TrainConfig

    p = sub.add_parser("train", help="train a target model with SFTMix from a profile")
    add_dataclass_args(p, TrainConfig)
    p.set_defaults(func=cmd_train)

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

    p = sub.add_parser("compare", help="compare two profiles of the same data (correlation, split agreement, flips)")
    p.add_argument("a", help="first table (A)")
    p.add_argument("b", help="second table (B)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--flips", type=int, default=10, help="flipped examples to list")
    p.add_argument("--flips-out", help="write all flipped examples to this JSONL file")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("merge", help="merge the part files of `sftmix score --shard i/N` into one table")
    p.add_argument("out", help="the merged table; its parts are OUT-STEM.part-i-of-N.duckdb beside it by default")
    p.add_argument("parts", nargs="*", help="part files (default: found beside OUT)")
    p.add_argument("--n-bins", type=int, default=10, help="quantile bins of confidence")
    p.add_argument("--projection", choices=["auto", "umap", "pca", "none"], default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the projection")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("dashboard", help="explore a table in the browser (Streamlit)")
    p.add_argument("table")
    p.add_argument("--port", type=int, default=8501, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--compare", help="a second profile of the same data, for the compare page")
    p.set_defaults(func=cmd_dashboard)

    from profiler.demo import add_demo_args

    p = sub.add_parser("demo", help="profile the packaged data with SmolLM2-135M, then open the dashboard")
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
