"""The data path at Tulu-3 scale: time, peak memory and disk of every stage around the model's forward passes.

The SFTMix paper's largest run profiles Tulu 3's SFT mixture (939,343 examples). At that size what surrounds the
model can cost more than the model, and memory that grows with N in Python objects decides whether a run fits a node
at all. This script runs each such stage on N synthetic Tulu-like examples (``tulu_like.py``: ~564 SmolLM2 tokens
each, 30% multi-turn) with the packaged SmolLM2 tokenizer and a tiny random Llama on its vocabulary (hidden 64, 2
layers): rendering and tokenizing (the data stage), a resumed data stage, a second shard worker's data stage, the
scorer's work around its forward passes, the table writes (scores, confidence, the UMAP map), merging 8 part files,
`sftmix train`'s data preparation, `sftmix info` and `sftmix export`. Only the score_overhead stage runs the model:
its LM head (49,152 x 64) still costs ~0.1-0.5 ms a token on a CPU, so that stage scores a subsample, on one thread,
with the backbone and LM-head calls timed inside the run; the rest of the run's CPU time is the overhead.

Each stage runs in a process of its own: the public `sftmix` CLI where a command does the stage (its work is its
cost less that of a process importing the command's modules), else this script calling the library (its work is
timed inside). A stage's peak RSS is its largest process's (``wait4``) and, for stages with worker processes, the
sampled sum of all of them. Wall time on a shared machine is noisy, so each row also gives the work's CPU seconds
(children included). The rows are markdown; then comes a projection to Tulu 3 on an 8-GPU, 96-core node: times by
example count, divided by a stage's parallelism (data-stage workers by cores, per-GPU workers by 8), RSS growth by the
examples one process holds, with the arithmetic printed. UMAP, fitted on 50,000 and transforming the rest at Tulu
scale, is projected from two fits (on all N, and on half) as a cost per fitted and per transformed point.

    python benchmarks/bench_scale.py --n 20000                      # every stage, ~30-50 min on 2 cores
    python benchmarks/bench_scale.py --n 2000 --stages render,resume --workdir /tmp/bs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the source tree measured: children import profiler from here
TULU3_N = 939_343
NODE_GPUS, NODE_CORES = 8, 96
CHECKPOINTS, EMBED_DIM = 2, 64
RENDERED = "rendered.duckdb"  # a copy of the render stage's table, beside T/ (T's disk figures do not count it)
STAGES = ("render", "resume", "shard", "writes", "train_prep", "info", "export", "merge", "score_overhead")
# What a stage reads: the render stage's table, or that table with scores, confidence and its map (writes).
NEEDS = {"resume": "render", "shard": "render", "writes": "render"} | dict.fromkeys(
    ("train_prep", "info", "export"), "writes"
)


# --- measuring a process ----------------------------------------------------------------------------------
def tree_rss(root: int) -> tuple[int, int]:
    """Resident bytes of ``root`` and all its descendants, now: in all, and anonymous only (heap and private
    memory, without the file pages of memory-mapped caches, which the kernel drops under pressure)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, anon, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError, KeyError, ValueError):  # it may have ended meanwhile
            status = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
            total += int(status["VmRSS"].split()[0]) * 1024
            anon += int(status["RssAnon"].split()[0]) * 1024
        todo.extend(children.get(pid, []))
    return total, anon


@dataclass
class Measured:
    """What one process cost: wall and CPU seconds (its reaped children included), the peak RSS of its largest
    process, and the sampled peaks of all its processes together: resident in all, and anonymous only."""

    wall_s: float
    cpu_s: float
    peak_rss: int
    tree_rss: int
    returncode: int
    output: str
    anon_rss: int = 0


def measure(cmd: list[str], env: dict[str, str]) -> Measured:
    """Run ``cmd``, sampling its processes' RSS every 0.2 s; its peak RSS comes from ``wait4``."""
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - read back once the process has ended
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[:] = map(max, peak, tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    log.seek(0)
    cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024
    return Measured(wall, cpu, rss, max(peak[0], rss), proc.returncode, log.read(), peak[1])


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (apparent sizes)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def listing(directory: Path) -> str:
    """``name size`` of a directory's entries (a file, or a whole folder such as a cache)."""
    items = sorted(directory.iterdir()) if directory.is_dir() else []
    return ", ".join(f"{p.name} {mib(disk_bytes(p))}" for p in items)


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- the run: workdir, rows, stages -----------------------------------------------------------------------
@dataclass
class Row:
    """One stage's measured figures, and how its time scales to Tulu 3."""

    stage: str
    m: Measured
    work_s: float
    work_cpu_s: float
    disk: int
    notes: str
    parallel: str  # "serial", "cores" (data-stage workers), "node shards" (12 cores each) or "gpus" (8 workers)
    baseline_rss: int = 0  # RSS before the stage's work (imports, model): the part that does not grow with N
    per_example_s: float | None = None  # scales by example count instead of work_s
    tulu: tuple[str, float] | None = None  # a stage's own projection (arithmetic, seconds), when not linear in N
    scale_rss: bool = True  # False: measured on a subsample, where fixed costs dominate; not projected


@dataclass
class Run:
    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    setup: dict = field(default_factory=dict)
    baselines: dict[str, Measured] = field(default_factory=dict)
    load_start: str = field(default_factory=lambda: ", ".join(f"{x:.1f}" for x in os.getloadavg()))

    @property
    def work(self) -> Path:
        return Path(self.args.workdir)

    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    def env(self) -> dict[str, str]:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        return env

    def child(self, name: str, *extra: str, env: dict | None = None) -> tuple[Measured, dict]:
        """Run ``name`` (a function of :data:`CHILDREN`) in a process of its own; its figures and its cost."""
        result = self.path("results", f"{name}.json")
        result.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, *self.common_args(), *extra]
        m = measure(cmd, {**self.env(), **(env or {})})
        if m.returncode != 0:
            raise SystemExit(f"stage {name} failed (exit {m.returncode}):\n{m.output[-4000:]}")
        return m, json.loads(result.read_text())

    def cli(self, argv: list[str], env: dict | None = None) -> Measured:
        m = measure([str(Path(sys.executable).with_name("sftmix")), *argv], {**self.env(), **(env or {})})
        if m.returncode != 0:
            raise SystemExit(f"sftmix {argv[0]} failed (exit {m.returncode}):\n{m.output[-4000:]}")
        return m

    def common_args(self) -> list[str]:
        a = self.args
        return [
            *("--n", str(a.n), "--workdir", str(a.workdir), "--num-proc", str(a.num_proc), "--seed", str(a.seed)),
            *("--sub", str(a.sub), "--max-tokens", str(a.max_tokens)),
        ]

    def import_baseline(self, modules: str) -> Measured:
        """What a process that only imports ``modules`` costs (a CLI command's fixed cost)."""
        if modules not in self.baselines:
            self.baselines[modules], _ = self.child("imports", "--modules", modules)
        return self.baselines[modules]

    def cli_row(self, stage: str, argv: list[str], modules: str, disk: Path, parallel: str, **env: str) -> Row:
        """A CLI command's row: its work is its cost less that of a process importing what the command imports."""
        base = self.import_baseline(modules)
        m = self.cli(argv, env)
        work, cpu = max(0.0, m.wall_s - base.wall_s), max(0.0, m.cpu_s - base.cpu_s)
        return Row(stage, m, work, cpu, disk_bytes(disk), "", parallel, base.peak_rss)

    def child_row(self, stage: str, disk: Path, parallel: str, env: dict | None = None) -> tuple[Row, dict]:
        m, r = self.child(stage, env=env)
        row = Row(stage, m, r["work_s"], r["work_cpu_s"], disk_bytes(disk), r.get("notes", ""), parallel)
        row.baseline_rss = r["rss_before"]
        return row, r

    def data_parallel(self) -> str:
        """How the data stage runs: over ``num_proc`` worker processes where the code has them."""
        return "cores" if self.setup.get("num_proc") else "serial"


# --- the stages (parent side) -----------------------------------------------------------------------------
def stage_render(run: Run) -> list[Row]:
    shutil.rmtree(run.path("T"), ignore_errors=True)
    run.path(RENDERED).unlink(missing_ok=True)
    row, r = run.child_row("render", run.path("T"), run.data_parallel())
    shutil.copyfile(run.path("T", "T.duckdb"), run.path(RENDERED))  # what the writes stage starts again from
    tokens, growth = r["tokens"], row.m.peak_rss - row.baseline_rss
    row.notes = (
        f"{run.args.n / row.work_s:,.0f} examples/s; {tokens / run.args.n:.0f} tokens/example; "
        f"{row.m.peak_rss / tokens:,.0f} B/token resident ({growth / tokens:,.0f} B/token above the "
        f"{mib(row.baseline_rss)} before the stage), {row.m.anon_rss / tokens:,.1f} B/token anonymous (all its "
        f"processes; the rest is the memory-mapped cache's file pages); on disk: {listing(run.path('T'))}"
    )
    return [row]


def stage_resume(run: Run) -> list[Row]:
    row, r = run.child_row("resume", run.path("T"), run.data_parallel())
    row.notes = f"{run.args.n / row.work_s:,.0f} examples/s; on disk: {listing(run.path('T'))}"
    return [row]


def stage_shard(run: Run) -> list[Row]:
    part = run.path("T", "T.part-1-of-8.duckdb")
    part.unlink(missing_ok=True)
    row, r = run.child_row("shard", part, "node shards" if run.data_parallel() == "cores" else "serial")
    row.notes = f"shard 1/8's data stage; part file {mib(disk_bytes(part))} ({r['shard_examples']:,} of its examples)"
    return [row]


def stage_writes(run: Run) -> list[Row]:
    """Scores, confidence and the UMAP map into the render stage's table, each in a process of its own."""
    rows = []
    for name, parallel in (("writes_scores", "gpus"), ("writes_confidence", "serial"), ("writes_umap", "serial")):
        row, r = run.child_row(name, run.path("T", "T.duckdb"), parallel)
        rows.append(row)
    fit, transform = r["fit_per_point"], r["transform_per_point"]  # UMAP: fit on a sample, transform the rest
    fit_n = min(TULU3_N, r["fit_sample"])
    text = f"fit {fit * 1e3:.2f} ms x {fit_n:,} + transform {transform * 1e3:.2f} ms x {TULU3_N - fit_n:,}"
    rows[-1].tulu = (text, fit * fit_n + transform * (TULU3_N - fit_n))
    return rows


def stage_train_prep(run: Run) -> list[Row]:
    """`sftmix train`'s data preparation, twice: as it runs (the target tokenizes as the reference, so the
    profile's rendering serves) and with that reuse off (rendered for the target, as another tokenizer would be)."""
    rows = []
    for stage, extra in (("train_prep", ()), ("train_prep_render", ("--render-target",))):
        rows += _train_prep(run, stage, extra)
    return rows


def _train_prep(run: Run, stage: str, extra: tuple[str, ...]) -> list[Row]:
    out = run.path("train_out")
    shutil.rmtree(out, ignore_errors=True)
    for cache in run.path("T", "T_data").glob("*train-*"):  # the target's cache (and lock) a run before made
        if cache.is_dir():
            shutil.rmtree(cache)
        else:
            cache.unlink()
    m, r = run.child("train_prep", *extra)
    if r.get("fallback"):  # prepare_data's signature changed: time the command's whole preparation instead
        argv = ["train", "--profile", str(run.path("T", "T.duckdb")), "--model", str(run.path("model"))]
        argv += ["--output_dir", str(out), "--max_steps", "1", "--save_strategy", "no", "--report_to", "none"]
        row = run.cli_row(stage, argv, "profiler.cli,trainer_plugin.train", out, "serial")
        row.notes = f"`sftmix train --max_steps 1` (prepare_data changed: {r['fallback']})"
        return [row]
    parallel = "cores" if r.get("num_proc") else "serial"  # the target's rendering map runs over processes too
    return [Row(stage, m, r["work_s"], r["work_cpu_s"], 0, r["notes"], parallel, r["rss_before"])]


def stage_info(run: Run) -> list[Row]:
    table = run.path("T", "T.duckdb")
    return [run.cli_row("info", ["info", str(table)], "profiler.cli,profiler.table.reader", table, "serial")]


def stage_export(run: Run) -> list[Row]:
    out = run.path("export", "all.parquet")
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    argv = ["export", str(run.path("T", "T.duckdb")), "-o", str(out)]
    row = run.cli_row("export", argv, "profiler.cli,profiler.export", out, "serial")
    row.notes = f"parquet {mib(row.disk)}"
    return [row]


def stage_merge(run: Run) -> list[Row]:
    shutil.rmtree(run.path("M"), ignore_errors=True)
    _, r = run.child("merge_parts")
    merged = run.path("M", "T.duckdb")
    argv = ["merge", str(merged), "--projection", "none"]
    row = run.cli_row("merge", argv, "profiler.pipeline.shards", merged, "serial")
    row.notes = (
        f"`sftmix merge --projection none` of 8 parts built at N ({r['how']}, {r['setup_s']:.0f} s, "
        f"{mib(r['parts_bytes'])} in all); includes confidence; its UMAP map is the writes_umap row's "
        f"project_table; merged table {mib(row.disk)}"
    )
    return [row]


def stage_score_overhead(run: Run) -> list[Row]:
    """`sftmix score` on a subsample, its forward passes timed inside the same run: what is left is the overhead."""
    shutil.rmtree(run.path("S"), ignore_errors=True)
    row, r = run.child_row("score_overhead", run.path("S"), "gpus", env={"OMP_NUM_THREADS": "1"})
    k, stages, forward = r["examples"], r["stage_seconds"], r["forward_cpu_s"]
    overhead = row.work_cpu_s - forward
    row.per_example_s, row.scale_rss = overhead / k, False
    row.notes = (
        f"`sftmix {' '.join(r['argv'])}` on {k:,} examples, one thread; its stages {stages} (wall); forward "
        f"(backbone calls, the batch's shared prefix once, + LM head at response positions) {forward:.1f} s CPU of "
        f"the run's {row.work_cpu_s:.1f} s: overhead {overhead:.1f} s = {overhead / k * 1e3:.2f} ms/example "
        f"(data stage and model load included; the score stage alone: {r['score_overhead_s'] / k * 1e3:.2f} "
        f"ms/example wall) -> {overhead / k * run.args.n:,.0f} s at N"
    )
    return [row]


PARENT = {name: globals()[f"stage_{name}"] for name in STAGES}


# --- the stages (child side): each runs in its own process and returns its figures --------------------------
def vm_rss() -> int:
    """This process's resident bytes now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_now() -> float:
    """CPU seconds of this process and of its children that have ended (data-stage workers, say)."""
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


class Clock:
    """Wall and CPU seconds since it was made, and the RSS then: a stage's work, apart from its imports."""

    def __init__(self) -> None:
        self.rss_before, self.t, self.c = vm_rss(), time.perf_counter(), cpu_now()

    def figures(self, **more) -> dict:
        wall, cpu = time.perf_counter() - self.t, cpu_now() - self.c
        return {"work_s": wall, "work_cpu_s": cpu, "rss_before": self.rss_before, **more}


def workdir_paths(args) -> dict[str, Path]:
    w = Path(args.workdir)
    return {"data": w / "data" / "data.jsonl", "sub": w / "data" / "sub.jsonl", "model": w / "model", "w": w}


def has_num_proc() -> bool:
    """Whether the data stage takes worker processes (``ScoreConfig.num_proc``, added by the Arrow data stage)."""
    from dataclasses import fields

    from profiler.config import ScoreConfig

    return "num_proc" in {f.name for f in fields(ScoreConfig)}


def score_config(args, out: Path, **kw):
    """``ScoreConfig`` for the workdir's data and model; ``num_proc`` where the config has that field."""
    from profiler.config import ScoreConfig

    p = workdir_paths(args)
    if has_num_proc():
        kw["num_proc"] = args.num_proc
    return ScoreConfig(model=str(p["model"]), data=[str(p["data"])], out=str(out), progress=False, **kw)


def build_tiny_model(out: Path) -> None:
    """A random 2-layer Llama (hidden 64, head_dim 32) on SmolLM2's tokenizer and vocabulary, saved with it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from profiler.assets import smollm2_checkpoint

    tok = AutoTokenizer.from_pretrained(smollm2_checkpoint())
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)


def child_setup(args) -> dict:
    """The data (regenerated when N or the seed changed), its subsample for score_overhead, and the model."""
    import torch
    import transformers
    from tulu_like import write_tulu_like

    p = workdir_paths(args)
    stamp = p["data"].with_suffix(".json")
    made = {"n": args.n, "seed": args.seed}
    t = time.perf_counter()
    if not stamp.is_file() or json.loads(stamp.read_text()) != made:
        write_tulu_like(p["data"], args.n, seed=args.seed)
        stamp.write_text(json.dumps(made))
    with p["data"].open(encoding="utf-8") as f, p["sub"].open("w", encoding="utf-8") as g:
        g.writelines(line for _, line in zip(range(args.sub), f))
    data_s = time.perf_counter() - t
    if not (p["model"] / "config.json").is_file():
        build_tiny_model(p["model"])
    return {
        "data_s": data_s,
        "num_proc": has_num_proc(),
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
        "data_bytes": p["data"].stat().st_size,
    }


def table_tokens(path: Path) -> int:
    """The tokens of a table's usable examples (by the writer's query: the examples frame holds every text, which
    at 1M is more than this machine)."""
    from profiler.table.writer import TableWriter

    with TableWriter(path) as t:
        return sum(n for _, n, _ in t.ok_token_counts())


def data_stage(cfg) -> dict:
    """The data stage as `sftmix score` runs it: ``prepare_data`` then ``open_run``; its figures."""
    from profiler.pipeline.prepare import open_run, prepare_data

    clock = Clock()
    table = open_run(cfg, prepare_data(cfg))
    if cfg.shard:  # what the shard worker's data stage adds (profiler.pipeline.run.run_score)
        index, count = (int(x) for x in cfg.shard.split("/"))
        table.set_meta({"shard": {"index": index, "count": count}, "shard_complete": False})
    table.close()
    return clock.figures()


def child_render(args) -> dict:
    table = Path(args.workdir, "T", "T.duckdb")
    return {**data_stage(score_config(args, table)), "tokens": table_tokens(table)}


def child_resume(args) -> dict:
    return data_stage(score_config(args, Path(args.workdir, "T", "T.duckdb")))


def child_shard(args) -> dict:
    from dataclasses import replace

    from profiler.pipeline.shards import in_shard, part_path
    from profiler.table.writer import TableWriter

    cfg = score_config(args, Path(args.workdir, "T", "T.duckdb"), shard="1/8")
    part = part_path(cfg.out, 1, 8)
    figures = data_stage(replace(cfg, out=str(part)))  # a shard worker's run writes its part file
    with TableWriter(part) as t:
        ids = t.ok_example_ids()
    return {**figures, "shard_examples": sum(in_shard(i, 1, 8) for i in ids)}


def ok_examples(table, shard: tuple[int, int] | None = None) -> list[tuple[str, int, int]]:
    """``(example_id, tokens, response tokens)`` of a table's usable examples (of one shard), in input order."""
    from profiler.pipeline.shards import in_shard

    rows = table.ok_token_counts()
    return [r for r in rows if shard is None or in_shard(r[0], *shard)]


def synthetic_batch(examples: list[tuple[str, int, int]], last: bool, rng) -> tuple[list, dict | None]:
    """Scores of one batch as the scorer makes them; at the last checkpoint with embeddings, token NLLs and texts."""
    import numpy as np
    from tulu_like import VOCAB

    from profiler.scoring.base import ExampleScore

    words = np.array(VOCAB, dtype=object)
    scores, texts = [], {} if last else None
    for eid, _, n_resp in examples:
        nll = (3 * rng.random(n_resp)).astype(np.float32)
        if last:
            vector = rng.standard_normal(EMBED_DIM).astype(np.float32)
            scores.append(ExampleScore(eid, float(nll.sum()), n_resp, embedding=vector, token_nll=nll))
            texts[eid] = words[rng.integers(0, len(words), n_resp)].tolist()
        else:
            scores.append(ExampleScore(eid, float(nll.sum()), n_resp))
    return scores, texts


def write_synthetic_scores(table, examples: list[tuple[str, int, int]], max_tokens: int, seed: int) -> dict:
    """Write CHECKPOINTS checkpoints' scores in the scorer's token-budget batches; wall and CPU seconds spent in
    ``write_scores``."""
    import numpy as np

    from profiler.pipeline.score import WriteGroup
    from profiler.scoring.batching import token_budget_batches
    from profiler.table.writer import CheckpointInfo

    infos = [CheckpointInfo(f"synthetic/checkpoint-{k + 1}", k + 1, (k + 1) / CHECKPOINTS) for k in range(CHECKPOINTS)]
    ids = table.register_checkpoints(infos)
    table.set_meta({"embedding_checkpoint": ids[-1]})
    batches = token_budget_batches([e[1] for e in examples], max_tokens)
    rng = np.random.default_rng(seed)
    wall = cpu = 0.0
    calls = 0
    for k, cid in enumerate(ids):
        made: dict[str, list[str]] = {}

        def write(rows, cid=cid, made=made) -> None:  # what the score loop writes: a group of batches at a time
            nonlocal wall, cpu, calls
            texts = {s.example_id: made.pop(s.example_id) for s in rows if s.example_id in made}
            t, c = time.perf_counter(), cpu_now()
            table.write_scores(cid, rows, texts or None)
            wall, cpu, calls = wall + time.perf_counter() - t, cpu + cpu_now() - c, calls + 1

        group = WriteGroup(write)
        for batch in batches:
            scores, texts = synthetic_batch([examples[i] for i in batch], k == len(ids) - 1, rng)
            made.update(texts or {})
            group.add(scores)
        group.flush()
    return {"work_s": wall, "work_cpu_s": cpu, "batches": len(batches) * len(ids), "calls": calls}


def mark_stages(table, *names: str) -> None:
    stages = table.get_meta("stages") or {}
    table.set_meta({"stages": {**stages, **dict.fromkeys(names, "done")}})


def child_writes_scores(args) -> dict:
    from profiler.table.writer import TableWriter

    with TableWriter(Path(args.workdir, "T", "T.duckdb")) as table:
        examples = ok_examples(table)
        clock = Clock()
        w = write_synthetic_scores(table, examples, args.max_tokens, args.seed)
        total = clock.figures()["work_s"]
        mark_stages(table, "data", "score")
    notes = (
        f"{len(examples):,} x {CHECKPOINTS} scores, token NLLs + texts and {EMBED_DIM}-d embeddings at the last; "
        f"{w['batches']:,} scorer batches of <= {args.max_tokens} tokens in {w['calls']:,} write_scores calls; "
        f"making the synthetic scores took {total - w['work_s']:.1f} s more (not counted)"
    )
    return {**w, "rss_before": clock.rss_before, "notes": notes}


def child_writes_confidence(args) -> dict:
    from profiler.confidence import compute_confidence
    from profiler.table.writer import TableWriter

    with TableWriter(Path(args.workdir, "T", "T.duckdb")) as table:
        clock = Clock()
        table.write_confidence(compute_confidence(table.scores_frame(), table.checkpoint_ids(), 10))
        figures = clock.figures(notes="compute_confidence + write_confidence")
        mark_stages(table, "confidence")
    return figures


def child_writes_umap(args) -> dict:
    """``project_table`` as a run's embed stage calls it; then a second projection fitted on half as many points
    separates UMAP's cost per fitted point from its cost per transformed one (a linear model of both)."""
    import numpy as np

    from profiler.embed import project, project_table
    from profiler.table.writer import TableWriter

    t = time.perf_counter()  # numba compiles UMAP's fit and transform on first use: a fixed cost, kept apart
    project(np.random.default_rng(0).random((300, EMBED_DIM), dtype=np.float32), method="umap", fit_sample=200)
    jit = time.perf_counter() - t
    with TableWriter(Path(args.workdir, "T", "T.duckdb")) as table:
        clock = Clock()
        info = project_table(table, method="umap", seed=0, fit_sample=50_000)
        figures = clock.figures()
        mark_stages(table, "embed")
        _, vectors = table.embedding_matrix()
    n, fit1, cpu1 = len(vectors), info["fit_on"], figures["work_cpu_s"]
    fit2 = fit1 // 2 + 1  # over 10,000 points UMAP runs 200 epochs (500 up to 10,000): both fits in one regime
    clock = Clock()
    project(vectors, method="umap", seed=0, fit_sample=fit2)
    cpu2 = clock.figures()["work_cpu_s"]
    extra = (cpu1 - cpu2) / (fit1 - fit2)  # a fitted point's CPU beyond a transformed one's (UMAP: one thread)
    transform = max(0.0, (cpu1 - extra * fit1) / n)
    notes = (
        f"UMAP fitted on {fit1:,} (the rest transformed): {cpu1:.1f} s CPU; fitted on {fit2:,} + {n - fit2:,} "
        f"transformed: {cpu2:.1f} s CPU (not counted); first-call JIT {jit:.0f} s before (not counted)"
    )
    return {**figures, "notes": notes, "fit_sample": 50_000, "fit_per_point": transform + extra,
            "transform_per_point": transform}  # fmt: skip


def child_merge_parts(args) -> dict:
    """8 complete part files at N: each shard's data stage (rendered once) and synthetic scores for its examples."""
    from dataclasses import replace

    from profiler.pipeline.prepare import open_run, prepare_data
    from profiler.pipeline.shards import part_path

    t = time.perf_counter()
    cfg = score_config(args, Path(args.workdir, "M", "T.duckdb"))
    prepared = prepare_data(cfg)
    for k in range(8):
        part_cfg = replace(cfg, shard=f"{k}/8", out=str(part_path(cfg.out, k, 8)))
        with open_run(part_cfg, prepared.for_shard(part_cfg.shard)) as table:  # as a shard's run: its rows only
            table.set_meta({"shard": {"index": k, "count": 8}, "shard_complete": False})
            write_synthetic_scores(table, ok_examples(table, (k, 8)), args.max_tokens, args.seed + k)
            mark_stages(table, "data", "score")
            table.set_meta({"shard_complete": True})
    how = "one prepare_data, then per shard open_run of its rows and synthetic scores of its examples"
    parts = sum(disk_bytes(part_path(cfg.out, k, 8)) for k in range(8))
    return {"setup_s": time.perf_counter() - t, "how": how, "parts_bytes": parts}


def dataset_tokens(dataset) -> int:
    """The tokens of a ``datasets.Dataset``'s rows, from its Arrow columns (no row decoded in Python)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.data.column("input_ids")).to_numpy(zero_copy_only=False)
    if getattr(dataset, "_indices", None) is not None:  # a selection of the rows
        lengths = lengths[dataset._indices.column(0).to_numpy()]
    return int(lengths.sum())


def child_train_prep(args) -> dict:
    """`sftmix train`'s data preparation: the profile's split examples re-rendered with the target's tokenizer."""
    import inspect
    from dataclasses import fields

    from profiler.hf import load_tokenizer
    from trainer_plugin import data as training_data
    from trainer_plugin.config import SFTMixTrainingArguments
    from trainer_plugin.train import prepare_data

    if args.render_target and hasattr(training_data, "profile_render"):  # as for a target of another tokenizer
        training_data.profile_render = lambda *a: None

    params = list(inspect.signature(prepare_data).parameters)
    if params != ["args", "tokenizer"]:
        return {"fallback": f"prepare_data{tuple(params)}"}
    p = workdir_paths(args)
    names = {f.name for f in fields(SFTMixTrainingArguments)}
    extra = {"dataset_num_proc": args.num_proc or None} if "dataset_num_proc" in names else {}
    targs = SFTMixTrainingArguments(
        profile=str(p["w"] / "T" / "T.duckdb"), model=str(p["model"]), output_dir=str(p["w"] / "train_out"),
        report_to="none", **extra,
    )  # fmt: skip
    tokenizer = load_tokenizer(str(p["model"]))
    clock = Clock()
    data = prepare_data(targs, tokenizer)
    figures = clock.figures()
    tokens = dataset_tokens(data.train)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - clock.rss_before) / max(tokens, 1)
    notes = f"{len(data.train):,} training rows, {tokens:,} tokens; {growth:,.0f} B/token above the RSS before"
    manifest = (
        Path(data.train.cache_files[0]["filename"]).with_name("manifest.json") if data.train.cache_files else None
    )
    if manifest is not None and manifest.is_file():
        how = json.loads(manifest.read_text()).get("from_profile_render")
        notes += "; taken from the profile's rendering" if how else "; rendered for the target"
    return {**figures, "notes": notes, "num_proc": bool(extra)}


def timed_calls(owner, name: str, spent: dict[str, float]) -> None:
    """Wrap ``owner.name`` so that its calls add their wall and CPU seconds to ``spent``."""
    inner = getattr(owner, name)

    def wrapper(*a, **kw):
        t, c = time.perf_counter(), time.process_time()
        try:
            return inner(*a, **kw)
        finally:
            spent["wall"] += time.perf_counter() - t
            spent["cpu"] += time.process_time() - c

    setattr(owner, name, wrapper)


def child_score_overhead(args) -> dict:
    """`sftmix score` through the console script's entry point (``profiler.cli.main``) in this process, with the
    model's work timed: the backbone (``TorchScorer._hidden``) and the LM head (``token_nll``) calls."""
    from profiler import cli
    from profiler.scoring import torch_backend
    from profiler.table.reader import open_table

    p = workdir_paths(args)
    out = p["w"] / "S" / "S.duckdb"
    flags = ["--no-ifd", "--token-scores", "last", "--projection", "none", "--no-progress"]  # UMAP: writes_umap
    flags += ["--max-tokens", str(args.max_tokens)]  # a GPU's batches: the loop's per-batch costs as a GPU pays them
    if has_num_proc():
        flags += ["--num-proc", str(args.num_proc)]
    argv = ["score", "--model", str(p["model"]), "--data", str(p["sub"]), "--out", str(out), *flags]
    spent = {"wall": 0.0, "cpu": 0.0}
    timed_calls(torch_backend.TorchScorer, "_hidden", spent)
    timed_calls(torch_backend, "token_nll", spent)
    clock = Clock()
    if cli.main(argv) != 0:
        raise SystemExit("sftmix score failed")
    figures = clock.figures()
    with open_table(out) as table:
        stages, k = table.meta.get("stage_seconds") or {}, table.summary()["scores"]
    shown = ["score", "--model", "TINY", "--data", "sub.jsonl", "--out", "S.duckdb", *flags]
    return {**figures, "argv": shown, "examples": k, "forward_cpu_s": spent["cpu"],
            "stage_seconds": stages, "score_overhead_s": stages.get("score", 0.0) - spent["wall"]}  # fmt: skip


def child_imports(args) -> dict:
    import importlib

    for name in args.modules.split(","):
        importlib.import_module(name)
    return {}


CHILDREN = {name[len("child_") :]: f for name, f in list(globals().items()) if name.startswith("child_")}


# --- reporting --------------------------------------------------------------------------------------------
def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def source_tree() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()

    changed = len(git("status", "--porcelain").splitlines())
    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return f"{ROOT} (not a git checkout)"
    return f"{ROOT} at {head}" + (f" + {changed} changed files" if changed else "")


def print_header(run: Run) -> None:
    mem = next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    print(f"date: {date.today()}; command: python {' '.join(sys.argv)}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the start: {run.load_start}; at the end: {load} (1, 5, 15 min)")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {int(mem) / 2**20:.0f} GiB; {run.setup['versions']}")
    num_proc = "yes" if run.setup["num_proc"] else "no (a serial data stage)"
    print(f"source: {source_tree()}; ScoreConfig.num_proc: {num_proc}")
    print(
        f"data: {run.args.n:,} Tulu-like examples, {mib(run.setup['data_bytes'])} JSONL; score_overhead on the first "
        f"{run.args.sub:,}; model: random Llama, hidden 64, 2 layers, SmolLM2 tokenizer (vocab 49,152)\n"
    )


def print_rows(rows: list[Row]) -> None:
    print(
        "| stage | wall s | work s | work CPU s | peak RSS (process) | peak RSS (all its processes) "
        "| peak anonymous RSS (all) | disk | notes |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.stage} | {r.m.wall_s:.1f} | {r.work_s:.1f} | {r.work_cpu_s:.1f} | {mib(r.m.peak_rss)} | "
            f"{mib(r.m.tree_rss)} | {mib(r.m.anon_rss)} | {mib(r.disk)} | {r.notes} |"
        )


def projection(run: Run, row: Row) -> dict:
    """How ``row`` scales to Tulu 3 on the node: its parallelism, the arithmetic, seconds (from wall and from CPU
    time), peak RSS and disk."""
    n = run.args.sub if row.per_example_s is not None else run.args.n
    p = run.args.num_proc
    share, speedup, how = {
        "cores": (1, NODE_CORES / p, f"data-stage workers: {NODE_CORES} cores / {p} here"),
        "node shards": (1, NODE_CORES / NODE_GPUS / p, f"8 shard workers at once, {NODE_CORES // 8} cores each / {p}"),
        "gpus": (1 / NODE_GPUS, 1, "one worker per GPU, each 1/8 of the examples"),
    }.get(row.parallel, (1, 1, "serial"))
    examples = TULU3_N * share
    if row.tulu is not None:  # the stage's own model, from CPU time
        text, wall = row.tulu
        cpu = wall
    elif row.per_example_s is not None:  # CPU time per example
        text, wall = f"{row.per_example_s * 1e3:.2f} ms x {examples:,.0f}", row.per_example_s * examples
        cpu = wall
    else:
        text = f"{row.work_s:.1f} s x {examples:,.0f}/{n:,}"
        wall, cpu = row.work_s * examples / n, row.work_cpu_s * examples / n
    if speedup != 1:
        text, wall, cpu = f"{text} / {speedup:g}", wall / speedup, cpu / speedup
    rss = row.baseline_rss + max(0, row.m.peak_rss - row.baseline_rss) * examples / n if row.scale_rss else None
    return {"how": how, "text": text, "wall": wall, "cpu": cpu, "rss": rss, "disk": row.disk * examples / n}


def print_projection(run: Run) -> None:
    print(
        f"\nProjection to Tulu 3 ({TULU3_N:,} examples) on a node of {NODE_GPUS} GPUs and {NODE_CORES} cores: a "
        "stage's work time scales by example count, divided by its parallelism (the same arithmetic on its CPU time "
        "in the next column: what the stage costs where it has its cores to itself); RSS above what the process held "
        "before the stage (or, for a CLI command, what importing its modules takes) scales by the examples one "
        "process holds; disk by example count (per process for per-GPU stages).\n"
    )
    print("| stage | parallel | arithmetic (work s) | projected time | from CPU time | projected peak RSS | disk |")
    print("|---|---|---|---|---|---|---|")
    for row in run.rows:
        p = projection(run, row)
        rss = f"{p['rss'] / 2**30:,.1f} GiB" if p["rss"] is not None else "- (subsample)"
        print(
            f"| {row.stage} | {p['how']} | {p['text']} = {p['wall']:,.0f} s | {p['wall'] / 60:,.1f} min | "
            f"{p['cpu'] / 60:,.1f} min | {rss} | {p['disk'] / 2**30:,.2f} GiB |"
        )


# --- main -------------------------------------------------------------------------------------------------
def run_stage(run: Run, name: str, state: dict) -> None:
    """Run stage ``name`` (after what it needs), keep its rows, and record it as done in the workdir."""
    need = NEEDS.get(name)
    fresh = name == "writes" and "writes" in state["done"]  # its scores are there already: start from a new table
    if fresh and run.path(RENDERED).is_file():  # the render's table as it was, instead of rendering again
        shutil.copyfile(run.path(RENDERED), run.path("T", "T.duckdb"))
        fresh = False
    if need and (need not in state["done"] or fresh):
        run_stage(run, need, state)
    if name == "render":
        state["done"] = []
    t = time.perf_counter()
    rows = PARENT[name](run)
    print(f"[{name}] {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    run.rows.extend(rows)
    state["done"] = [*dict.fromkeys([*state["done"], name])]
    run.path("state.json").write_text(json.dumps(state))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="synthetic Tulu-like examples")
    p.add_argument("--workdir", help="data, model and tables (default: a new temporary directory); reused if given")
    p.add_argument("--num-proc", type=int, default=os.cpu_count(), help="data-stage workers, where supported")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of: {', '.join(STAGES)}")
    p.add_argument("--sub", type=int, default=1000, help="examples of score_overhead's `sftmix score` run")
    p.add_argument("--max-tokens", type=int, default=16384, help="token budget of the writes' batches (GPU default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--modules", help=argparse.SUPPRESS)
    p.add_argument("--render-target", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown:
        p.error(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="sftmix_bench_scale_")
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        sys.path.insert(0, str(Path(__file__).parent))  # tulu_like
        result = CHILDREN[args.child](args)
        Path(args.workdir, "results", f"{args.child}.json").write_text(json.dumps(result))
        return
    run = Run(args)
    run.path("results").mkdir(parents=True, exist_ok=True)
    run.path("data").mkdir(exist_ok=True)
    _, run.setup = run.child("setup")
    state_file = run.path("state.json")
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if state.get("n") != args.n or state.get("seed") != args.seed:
        state = {"n": args.n, "seed": args.seed, "done": []}
    wanted = args.stages.split(",")
    for name in [s for s in STAGES if s in wanted]:
        run_stage(run, name, state)
    print_header(run)
    print_rows(run.rows)
    print_projection(run)
    print(f"\nworkdir: {args.workdir}")


if __name__ == "__main__":
    main()
