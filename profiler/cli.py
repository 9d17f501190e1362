"""The `sftmix` console script: one subcommand per job, each a thin layer over a library function.

Every subcommand's options are dataclasses (:mod:`profiler.config`, :mod:`trainer_plugin.config`); their flags
come from those fields, so a value outside its range stops the command in one line, exit code 2, before any
model loads. Ctrl-C stops any subcommand with one line and exit code 130 (a profile or score run resumes), whatever
stdout and stderr are: a line that can no longer be read there (a pipe to a ``tee`` that died on the same Ctrl-C, a
terminal that hung up) is dropped, never turned into a traceback. Output whose reader is gone otherwise stops the
command quietly, as SIGPIPE would (exit code 141). SIGTERM and SIGHUP keep their default action (the process ends
at once, and a profile or score run resumes from what it had committed), except for ``sftmix dashboard``, which
stops its server first and exits with 128 + N (:mod:`dashboard.launch`).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from profiler import config as C
from profiler.errors import SftmixError
from profiler.options import build, make_parser_class


def cmd_profile(
    score_cfg: C.ScoreConfig, ft_cfg: C.FinetuneConfig, extras: C.ProfileExtras, *, command: list[str]
) -> int:
    from profiler.pipeline import run_profile

    if score_cfg.checkpoints:
        raise SftmixError("profile takes --checkpoints-from DIR; --checkpoint belongs to `sftmix score`")
    out = run_profile(score_cfg, ft_cfg, checkpoints_from=extras.checkpoints_from, command=command)
    # Under torchrun / accelerate launch every rank ran the profile; rank 0 shows the table once.
    return print_info(out) if int(os.environ.get("RANK", "0")) == 0 else 0


def cmd_score(cfg: C.ScoreConfig, *, command: list[str]) -> int:
    from profiler.pipeline import run_score

    return print_info(run_score(cfg, command=command))


def cmd_train(cfg) -> int:
    from trainer_plugin.train import run_train

    out = run_train(cfg)
    print(f"trained model saved to {out}")
    return 0


def print_info(path: str, as_json: bool = False) -> int:
    from profiler.table.info import info_json, info_text, table_info

    info = table_info(path)
    print(info_json(info) if as_json else info_text(info))
    return 0


def cmd_info(o: C.InfoOptions) -> int:
    return print_info(o.table, o.json)


def cmd_export(o: C.ExportOptions) -> int:
    from profiler.export import export_split

    n = export_split(o.table, o.output, split=o.split, fmt=o.format, overwrite=o.overwrite)
    print(f"wrote {n} examples ({o.split}) to {o.output}")
    return 0


def cmd_compare(o: C.CompareOptions) -> int:
    from profiler.table.compare import compare_tables

    cmp = compare_tables(o.a, o.b)
    if o.json:
        print(json.dumps(cmp.to_dict(o.flips), indent=2, default=str))
    else:
        print(cmp.text(o.flips))
    if o.flips_out:
        cmp.flips.write_ndjson(o.flips_out)
        print(f"wrote {cmp.flips.height} flipped examples to {o.flips_out}", file=sys.stderr)
    return 0


def cmd_merge(o: C.MergeOptions) -> int:
    from profiler.pipeline.shards import merge_parts

    out = merge_parts(o.out, o.parts or None, n_bins=o.n_bins, projection=o.projection, projection_seed=o.seed)
    return print_info(str(out))


def cmd_dashboard(o: C.DashboardOptions) -> int:
    from dashboard.launch import run_dashboard

    return run_dashboard(o.table, port=o.port, host=o.host, compare=o.compare)


def cmd_demo(o: C.DemoOptions, *, command: list[str]) -> int:
    from profiler.demo import run_demo

    return run_demo(o, command=command)


def _train_classes() -> list[type]:
    from trainer_plugin.config import SFTMixTrainingArguments

    return [SFTMixTrainingArguments]


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[..., int]
    classes: Callable[[], list[type]]
    records_command: bool = False  # run(..., command=ARGV): the command line, recorded in the table it writes
    usage: str | None = None  # a short usage line instead of argparse's list of every flag


COMMANDS: dict[str, Command] = {
    "profile": Command(
        "fine-tune the reference model, score each checkpoint, write the table",
        cmd_profile,
        lambda: [C.ScoreConfig, C.FinetuneConfig, C.ProfileExtras],
        records_command=True,
    ),
    "score": Command(
        "score given checkpoints (or a model) on a dataset into a confidence table",
        cmd_score,
        lambda: [C.ScoreConfig],
        records_command=True,
    ),
    "train": Command(
        "train a target model with SFTMix from a profile",
        cmd_train,
        _train_classes,
        usage="%(prog)s --model MODEL --profile PROFILE --output_dir DIR [OPTIONS]",
    ),
    "export": Command("export a split with its confidence columns", cmd_export, lambda: [C.ExportOptions]),
    "info": Command("summarize a confidence table", cmd_info, lambda: [C.InfoOptions]),
    "compare": Command(
        "compare two profiles of the same data (correlation, split agreement, flips)",
        cmd_compare,
        lambda: [C.CompareOptions],
    ),
    "merge": Command(
        "merge the part files of `sftmix score --shard i/N` into one table", cmd_merge, lambda: [C.MergeOptions]
    ),
    "dashboard": Command("explore a table in the browser (Streamlit)", cmd_dashboard, lambda: [C.DashboardOptions]),
    "demo": Command(
        "profile the packaged data with SmolLM2-135M, then open the dashboard",
        cmd_demo,
        lambda: [C.DemoOptions],
        records_command=True,
    ),
}


def make_parser(command: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """The top-level parser and each subcommand's parser.

    Only ``command``'s parser gets its flags (built from its option dataclasses): the others' classes are not
    imported, so `sftmix info` never loads the trainer's ``TrainingArguments`` (and torch)."""
    parser_class = make_parser_class()
    parser = parser_class(prog="sftmix", description="Profile SFT data confidence and train with SFTMix.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=parser_class)
    subparsers = {}
    for name, cmd in COMMANDS.items():
        classes = cmd.classes() if name == command else ()
        subparsers[name] = sub.add_parser(
            name, help=cmd.help, description=cmd.help, usage=cmd.usage, dataclass_types=classes
        )
    return parser, subparsers


def _interrupted(command: str | None, cfgs: Sequence[Any]) -> str:
    """The one line printed on Ctrl-C: what was kept and how to go on."""
    out = next((getattr(c, "out", None) for c in cfgs if getattr(c, "out", None)), None)
    if command in ("profile", "score") and out:
        return f"interrupted; what was finished is saved in {out}: run the same command again to resume"
    return "interrupted"


def _close_progress_bars() -> None:
    """Close open tqdm bars now, so none redraws itself under the interruption's line at exit. A bar whose stream's
    reader is gone (a ``tee`` that died on the same Ctrl-C) silences that stream instead of raising."""
    tqdm = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", [])):
        try:
            bar.close()
        except (OSError, ValueError):
            _silence(getattr(bar, "fp", sys.stderr))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    cfgs: list[Any] = []
    try:
        try:
            code = _run(command, argv, cfgs)
        except SftmixError as e:
            _say(f"sftmix {command}: error: {e}")
            code = 2
        except KeyboardInterrupt:
            code = _on_interrupt(command, cfgs)
        except Exception as e:
            if _is_interrupted_query(e):
                code = _on_interrupt(command, cfgs)
            elif _output_gone(e):
                code = _on_output_gone()
            else:
                raise
    except KeyboardInterrupt:  # Ctrl-C while an error (or the first Ctrl-C) was being reported
        code = _on_interrupt(command, cfgs)
    return _flush_outputs(code)


def _run(command: str | None, argv: list[str], cfgs: list[Any]) -> int:
    """Parse ``argv`` and run the command; its options objects are appended to ``cfgs`` as soon as they exist."""
    parser, subparsers = make_parser(command)
    try:
        if command in subparsers:
            subparsers[command].apply_config_args(argv[argv.index(command) + 1 :])
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad flag (already reported in one line)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(sys.unraisablehook, "sftmix_quiet", False):  # main() may run many times in one process
        sys.unraisablehook = _quiet_interrupts(sys.unraisablehook)
    cmd = COMMANDS[command]
    cfgs.extend(build(cmd.classes(), args))
    return cmd.run(*cfgs, command=["sftmix", *argv]) if cmd.records_command else cmd.run(*cfgs)


def _quiet_interrupts(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """An unraisable-exception hook that prints nothing for Ctrl-C landing where Python cannot raise it (a
    finalizer). Table writes hold Ctrl-C until they commit, so it never lands in DuckDB's callbacks."""

    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)

    quiet.sftmix_quiet = True
    return quiet


def _is_interrupted_query(e: BaseException) -> bool:
    """Ctrl-C during a DuckDB statement: DuckDB cancels the statement and raises
    its own error instead of ``KeyboardInterrupt``: ``InterruptException`` or ``RuntimeError("Query interrupted")``.
    Only reads can be cut so: table writes hold Ctrl-C until they commit (``profiler.table.writer.interrupts_held``)."""
    duckdb = sys.modules.get("duckdb")
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return True
        if duckdb is not None and isinstance(e, getattr(duckdb, "InterruptException", ())):
            return True
        if isinstance(e, RuntimeError) and str(e).strip() == "Query interrupted":
            return True
        e = e.__cause__ or e.__context__
    return False


def _on_interrupt(command: str | None, cfgs: Sequence[Any]) -> int:
    """Ctrl-C: the interruption's line on stderr (where it can still be written), exit code 130. A second Ctrl-C
    while the line is written leaves it at that."""
    try:
        _close_progress_bars()
        _say(f"\nsftmix {command}: {_interrupted(command, cfgs)}")
    except KeyboardInterrupt:
        pass
    return 130


# The exit code of a command whose output's reader is gone, as if SIGPIPE had ended it (128 + 13).
OUTPUT_GONE = 128 + getattr(signal, "SIGPIPE", 13)


def _on_output_gone() -> int:
    """The reader of stdout or stderr is gone (``sftmix ... | head``, a ``tee`` that exited) or their terminal hung up:
    stop quietly as SIGPIPE would, exit code 141 (a profile or score run resumes)."""
    for stream in (sys.stdout, sys.stderr):
        if _broken(stream):
            _silence(stream)
    return OUTPUT_GONE


def _output_gone(e: BaseException) -> bool:
    """``e`` is (or was caused by) a write to stdout or stderr after its reader went away or its terminal hung up."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.EPIPE, errno.EIO):
            return _broken(sys.stdout) or _broken(sys.stderr)
        e = e.__cause__ or e.__context__
    return False


def _broken(stream: Any) -> bool:
    """Writes to ``stream`` cannot arrive: a pipe or socket without reader (POLLERR), a terminal that hung up
    (POLLHUP), a closed descriptor."""
    try:
        fd = stream.fileno()
        poll = select.poll()
    except (AttributeError, OSError, ValueError):  # not a file (a test's capture), closed, or no poll() (Windows)
        return False
    poll.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, events in poll.poll(0))


def _silence(stream: Any) -> None:
    """Send what ``stream`` still buffers, and all it writes from now on, to os.devnull: its reader is gone, and the
    interpreter's last flush at exit would otherwise fail (exit code 120, an "Exception ignored" message)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)
        stream.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _say(line: str) -> None:
    """Print ``line`` on stderr if it can still be read there; nothing (and no traceback) when it cannot."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # EPIPE (its reader is gone), EIO (its terminal hung up), closed
        _silence(sys.stderr)


def _flush_outputs(code: int) -> int:
    """Flush stdout and stderr before the interpreter does: a stream whose reader is gone is silenced (no
    "Exception ignored" at exit); a command that succeeded but whose output was lost gets exit code 141."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            _silence(stream)
            if code == 0:
                code = OUTPUT_GONE
        except (AttributeError, KeyboardInterrupt):
            pass
    return code


if __name__ == "__main__":
    sys.exit(main())
