"""Does SFTMix help? A rerunnable study: seeds, held-out NLL per epoch and split, and the paper's ablations.

Drives the product's own API: ``profiler.pipeline.run_profile`` (what `sftmix profile` runs) profiles the
packaged FAQ + dialog data with the packaged SmolLM2-135M-Instruct as reference (C >= 3 checkpoints), and
``trainer_plugin.train.build_trainer`` (what `sftmix train` runs) trains the target, with a stratified, seeded
held-out fifth (``eval_fraction=0.2``, fixed ``eval_seed``: the same examples for every arm and seed).

Arms, identical but for the regularizer (same seeds, so ``ntp``, ``sftmix`` and ``mixup_equal`` train on the
same paired batches in the same order: the PairedSampler is a function of seed and epoch):

* ``ntp``                  next-token loss only (``mixup=False``)
* ``sftmix``               NTP + 0.2 * Mixup, alpha 0.5 (the paper's setting)
* ``mixup_equal``          NTP + 1.0 * Mixup (the paper's ablation)
* ``sftmix_random_split``  SFTMix on a random split of the same sizes: the training rows' ``confident`` flags
                           are a seeded permutation of the real ones (the held-out set keeps the real splits)

Held-out response NLL (token-weighted) is measured before training and after every epoch, overall and per split.
The learning rate is chosen once, before any Mixup arm runs, by a sweep on ``ntp`` alone (lowest final held-out
NLL; ``--sweep-lr``, extended past the grid's edge when the best rate lies on it, so the baseline is not
handicapped by the grid; ``--sweep-extend``), or fixed with ``--lr``. After training, the training set is
re-scored with each trained target (``profiler.scoring.TorchScorer``) and the standard deviation of per-example
confidence (minus perplexity) is reported (the paper's second claim: about 7% lower with SFTMix).

Cost. The CPU defaults fit an hour on the 2-core CI machine: LoRA (r 16), ``--max-length 128`` (the packaged
examples are ~60-100 tokens with the chat template, so this truncates almost nothing), 96 examples (48 FAQ + 48
dialogs: 76 trained on, 20 held out), 3 seeds, 3 epochs, batch 8, a 3-point sweep (extended one step when the best
rate is at its edge) whose best run is reused as ``ntp``'s first seed: 14-15 training runs of about 3.5 minutes
each on a 2-core AMD EPYC, plus 2.5 minutes of profiling. Full fine-tuning, 800 examples or 256 tokens are
several hours there (one full step of SmolLM2-135M at batch 8 x 256 takes about 18 s, ``bench_trainer.py``).
``--device cuda`` switches the defaults to the full setting: all the packaged data, 5 seeds, full fine-tuning,
``--max-length 1024``.

    python benchmarks/study_ntp_vs_sftmix.py                              # CPU default, writes results/
    python benchmarks/study_ntp_vs_sftmix.py --device cuda                # full setting
    python benchmarks/study_ntp_vs_sftmix.py --profile run.duckdb --model path/to/target --lr 3e-5

Outputs ``benchmarks/results/ntp_vs_sftmix.json`` (``--out``): ``setup`` (every setting, versions, machine),
``runs`` (arm, seed, epoch, split, heldout_nll), ``confidence_std`` (arm, seed, value); the figure
``ntp_vs_sftmix.png`` and the README's tables ``ntp_vs_sftmix.md`` beside it; and the tables on stdout.
``--report results.json`` redraws the figure and tables of a finished study without training.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARMS = {
    "ntp": dict(mixup=False, mu=0.2, alpha=0.5, random_split=False),
    "sftmix": dict(mixup=True, mu=0.2, alpha=0.5, random_split=False),
    "mixup_equal": dict(mixup=True, mu=1.0, alpha=0.5, random_split=False),
    "sftmix_random_split": dict(mixup=True, mu=0.2, alpha=0.5, random_split=True),
}
SPLITS = {"all": "eval_ntp_loss", "confident": "eval_ntp_loss_confident", "unconfident": "eval_ntp_loss_unconfident"}
EVAL_SEED = 0
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ntp_vs_sftmix.json"

log = logging.getLogger("study")


# --- settings -------------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda switches to the full setting)")
    p.add_argument("--profile", help="an existing confidence table (skips profiling)")
    p.add_argument("--model", help="target model (default: the packaged SmolLM2-135M-Instruct)")
    p.add_argument("--reference", help="reference model for profiling (default: the packaged SmolLM2-135M-Instruct)")
    p.add_argument(
        "--n-examples",
        default=None,
        help="examples to profile, half FAQ half dialogs, or 'all' (default 96 on CPU, all on cuda)",
    )
    p.add_argument("--n-checkpoints", type=int, default=3, help="reference checkpoints C (>= 3)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 3 on CPU, 5 on cuda)")
    p.add_argument("--epochs", type=int, default=3, help="whole epochs (held-out NLL is measured after each)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per step (half confident, half not)")
    p.add_argument("--lr", type=float, default=None, help="fixed learning rate (skips the sweep)")
    p.add_argument(
        "--sweep-lr",
        default=None,
        help="learning rates tried on ntp (default 1e-5,3e-5,1e-4; 3e-4,1e-3,3e-3 with LoRA)",
    )
    p.add_argument(
        "--sweep-extend",
        type=int,
        default=1,
        help="when the best rate is at the grid's edge, try up to this many rates beyond it (default 1)",
    )
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None, help="default: on CPU, off on cuda")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--max-length", type=int, default=None, help="default 128 on CPU, 1024 on cuda")
    p.add_argument("--eval-fraction", type=float, default=0.2)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="the JSON to write (the figure goes beside it)")
    p.add_argument("--workdir", help="where the profile and training runs go (default: a temporary directory)")
    p.add_argument("--debug-pairs", action="store_true", help="store every run's pairs (example ids) in the JSON")
    p.add_argument("--no-figure", action="store_true")
    p.add_argument("--report", metavar="JSON", help="only print the tables and redraw the figure of a finished study")
    args = p.parse_args(argv)
    if args.report:
        return args
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    full = args.device.startswith("cuda")
    args.n_examples = args.n_examples or ("all" if full else "96")
    args.seeds = args.seeds or (5 if full else 3)
    args.lora = (not full) if args.lora is None else args.lora
    args.max_length = args.max_length or (1024 if full else 128)
    if args.sweep_lr is None:
        args.sweep_lr = "3e-4,1e-3,3e-3" if args.lora else "1e-5,3e-5,1e-4"
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or "ntp" not in args.arms:
        p.error(f"--arms: unknown {unknown}" if unknown else "--arms must include ntp (the baseline)")
    if args.n_checkpoints < 3 and not args.profile:
        p.error("--n-checkpoints must be >= 3")
    return args


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "accelerate", "duckdb", "numpy", "sftmix"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine(device: str) -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"cpu": cpu or platform.processor(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if device.startswith("cuda"):
        import torch

        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


# --- profile --------------------------------------------------------------------------------------------------------
def make_profile(args, work: Path) -> str:
    """`sftmix profile` on the packaged data, as the demo does (profiler/demo.py)."""
    from profiler.assets import smollm2_checkpoint, write_demo_data
    from profiler.config import FinetuneConfig, ScoreConfig
    from profiler.pipeline import run_profile

    reference = args.reference or str(smollm2_checkpoint())
    if args.n_examples == "all":
        n_faq = n_chat = 10**9
    else:
        n = int(args.n_examples)
        n_faq, n_chat = n // 2, n - n // 2
    specs = write_demo_data(work / "data", n_faq, n_chat, seed=0)
    score = ScoreConfig(
        model=reference,
        data=specs,
        out=str(work / "profile.duckdb"),
        device=args.device,
        max_length=args.max_length,
        truncate=True,
        on_error="skip",
        embed=False,
        token_scores="none",  # the study needs per-example confidence only
        ifd=False,
        progress=False,
    )
    ft = FinetuneConfig(n_checkpoints=args.n_checkpoints, lora=args.lora, seed=0, keep_checkpoints="none")
    return run_profile(score, ft)


# --- one training run -----------------------------------------------------------------------------------------------
class PairRecorder:
    """Wraps the PairCollator: records the example ids of every training batch as (confident, unconfident) pairs."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, features):
        k = len(features) // 2
        self.batches.append([[a["example_id"], b["example_id"]] for a, b in zip(features[:k], features[k:])])
        return self.collator(features)


def training_args(args, arm: str, seed: int, lr: float, out_dir: Path):
    from trainer_plugin import SFTMixTrainingArguments

    spec = ARMS[arm]
    return SFTMixTrainingArguments(
        model=args.model_path,
        profile=args.profile_path,
        output_dir=str(out_dir),
        mixup=spec["mixup"],
        mu=spec["mu"],
        alpha=spec["alpha"],
        lora=args.lora,
        lora_r=args.lora_r,
        max_length=args.max_length,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=lr,
        seed=seed,
        eval_fraction=args.eval_fraction,
        eval_seed=EVAL_SEED,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=10,
        report_to="none",
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
    )


def randomize_split(trainer, seed: int) -> dict:
    """Give the trainer training rows whose flags are a seeded permutation of the real ones (same sizes)."""
    ds = trainer.train_dataset
    flags = np.asarray(ds["confident"], dtype=bool)
    perm = np.random.default_rng([seed, 1234]).permutation(flags)
    trainer.train_dataset = ds.remove_columns("confident").add_column("confident", perm.tolist())
    return {"n_confident": int(perm.sum()), "n_flipped": int((perm != flags).sum())}


def confidence_std(trainer, rows) -> float:
    """Std over the training examples of confidence (minus perplexity) under the trained target."""
    import torch

    from profiler.scoring import ScoreItem, TorchScorer

    model = trainer.model
    model.eval()
    items = [ScoreItem(r["example_id"], r["input_ids"], [lab != -100 for lab in r["labels"]]) for r in rows]
    pad = trainer.processing_class.pad_token_id or 0
    with torch.inference_mode():
        scores = [s for b in TorchScorer(model, pad_token_id=pad).score(items, progress=False) for s in b]
    conf = np.array([-s.perplexity for s in scores if s.n_tokens])
    return float(conf.std())


def train_run(args, arm: str, seed: int, lr: float, work: Path) -> dict:
    import torch

    from trainer_plugin.train import build_trainer

    out_dir = work / "runs" / f"{arm}-seed{seed}-lr{lr:g}"
    t0 = time.perf_counter()
    trainer = build_trainer(training_args(args, arm, seed, lr, out_dir))
    real_rows = list(trainer.train_dataset)
    extra = randomize_split(trainer, seed) if ARMS[arm]["random_split"] else {}
    recorder = PairRecorder(trainer.data_collator)
    trainer.data_collator = recorder
    heldout = sorted(trainer.eval_dataset["example_id"])
    evals = [(0, trainer.evaluate())]
    torch.manual_seed(seed)
    trainer.train()
    evals += [(round(h["epoch"]), h) for h in trainer.state.log_history if "eval_ntp_loss" in h]
    n_batches = trainer._get_train_sampler().n_batches
    batches = recorder.batches
    epochs = [sum(batches[i : i + n_batches], []) for i in range(0, len(batches), n_batches)]
    runs = [
        {"arm": arm, "seed": seed, "epoch": epoch, "split": split, "heldout_nll": float(m[key])}
        for epoch, m in evals
        for split, key in SPLITS.items()
    ]
    std = confidence_std(trainer, real_rows)
    del trainer
    shutil.rmtree(out_dir, ignore_errors=True)
    seconds = time.perf_counter() - t0
    log.info("%s seed %d lr %g: final held-out NLL %.4f (%.0fs)", arm, seed, lr, evals[-1][1]["eval_ntp_loss"], seconds)
    return {
        "runs": runs,
        "confidence_std": std,
        "heldout_ids": heldout,
        "n_train": len(real_rows),
        "pairs": epochs,
        "pairs_digest": [digest(e) for e in epochs],
        "seconds": round(seconds, 1),
        **extra,
    }


# --- the study ------------------------------------------------------------------------------------------------------
def best_lr(sweep: list[dict]) -> float:
    return min(sweep, key=lambda s: s["final_heldout_nll"])["lr"]


def next_lr(tried: list[float], best: float) -> float | None:
    """The next rate beyond the grid's edge when ``best`` lies on it, one grid step further (for a half-decade
    grid 3e-4, 1e-3, 3e-3: 1e-2 above, 1e-4 below); None when ``best`` is inside the grid."""
    v = sorted(set(tried))
    if len(v) < 2 or v[0] < best < v[-1]:
        return None
    if best == v[0]:
        v = v[::-1]
    nxt = v[-2] * v[-1] / v[-3] if len(v) >= 3 else v[-1] ** 2 / v[-2]
    return float(f"{nxt:.3g}")


def final_nll(result: dict, split: str = "all") -> float:
    last = max(r["epoch"] for r in result["runs"])
    return next(r["heldout_nll"] for r in result["runs"] if r["epoch"] == last and r["split"] == split)


def summary(runs: list[dict], arms: list[str], seeds: list[int]) -> list[dict]:
    """Final held-out NLL per arm and split: mean and std over seeds, and the paired difference against ntp."""
    last = max(r["epoch"] for r in runs)
    final = {(r["arm"], r["seed"], r["split"]): r["heldout_nll"] for r in runs if r["epoch"] == last}
    rows = []
    for split in SPLITS:
        for arm in arms:
            v = np.array([final[(arm, s, split)] for s in seeds])
            d = v - np.array([final[("ntp", s, split)] for s in seeds])
            sd = lambda x: float(x.std(ddof=1)) if len(x) > 1 else float("nan")  # noqa: E731
            rows.append(
                {
                    "split": split,
                    "arm": arm,
                    "mean": float(v.mean()),
                    "std": sd(v),
                    "diff_mean": float(d.mean()),
                    "diff_std": sd(d),
                    "n_seeds": len(seeds),
                }
            )
    return rows


def print_table(rows: list[dict], stds: list[dict]) -> None:
    print("\nfinal held-out response NLL (nats/token): mean ± std over seeds; paired difference vs ntp")
    print(f"{'split':12s} {'arm':22s} {'NLL':>17s} {'minus ntp':>19s}")
    for r in rows:
        diff = "" if r["arm"] == "ntp" else f"{r['diff_mean']:+.4f} ± {r['diff_std']:.4f}"
        print(f"{r['split']:12s} {r['arm']:22s} {r['mean']:8.4f} ± {r['std']:.4f} {diff:>19s}")
    print("\nstd of per-example confidence (minus perplexity) on the training set, mean over seeds")
    for arm in dict.fromkeys(s["arm"] for s in stds):
        v = [s["value"] for s in stds if s["arm"] == arm]
        print(f"  {arm:22s} {np.mean(v):10.4f}  (seeds: {', '.join(f'{x:.4f}' for x in v)})")


def markdown(out: dict) -> str:
    """The README's tables: final held-out NLL per split and arm (mean ± std over seeds, the paired difference
    against ntp and in how many seeds the arm beat ntp), and the std of confidence per arm against ntp's."""
    setup, rows = out["setup"], out["summary"]
    seeds = setup["seeds"]
    last = max(r["epoch"] for r in out["runs"])
    final = {(r["arm"], r["seed"], r["split"]): r["heldout_nll"] for r in out["runs"] if r["epoch"] == last}
    lines = [
        f"| split | arm | held-out NLL after epoch {last:g} (mean ± std, {len(seeds)} seeds) | minus ntp (paired) "
        "| seeds below ntp |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["arm"] == "ntp":
            diff = wins = "-"
        else:
            diff = f"{r['diff_mean']:+.4f} ± {r['diff_std']:.4f}"
            n_won = sum(final[(r["arm"], s, r["split"])] < final[("ntp", s, r["split"])] for s in seeds)
            wins = f"{n_won}/{len(seeds)}"
        lines.append(f"| {r['split']} | {r['arm']} | {r['mean']:.4f} ± {r['std']:.4f} | {diff} | {wins} |")
    arms = list(dict.fromkeys(c["arm"] for c in out["confidence_std"]))
    # Each run at its best epoch after training, as early stopping on this held-out set would pick it.
    best = {}
    for r in out["runs"]:
        if r["split"] == "all" and r["epoch"] > 0:
            key = (r["arm"], r["seed"])
            best[key] = min(best.get(key, math.inf), r["heldout_nll"])
    lines += ["", "| arm | held-out NLL at each run's best epoch (all) | minus ntp (paired) | seeds below ntp |"]
    lines.append("|---|---|---|---|")
    for arm in arms:
        v = np.array([best[(arm, s)] for s in seeds])
        d = v - np.array([best[("ntp", s)] for s in seeds])
        sd = (lambda x: float(x.std(ddof=1))) if len(seeds) > 1 else (lambda x: float("nan"))
        diff = "-" if arm == "ntp" else f"{d.mean():+.4f} ± {sd(d):.4f}"
        wins = "-" if arm == "ntp" else f"{int((d < 0).sum())}/{len(seeds)}"
        lines.append(f"| {arm} | {v.mean():.4f} ± {sd(v):.4f} | {diff} | {wins} |")
    std = {(c["arm"], c["seed"]): c["value"] for c in out["confidence_std"]}
    lines += [
        "",
        "| arm | std of confidence on the training set (mean ± std over seeds) | vs ntp (paired) |",
        "|---|---|---|",
    ]
    for arm in arms:
        v = np.array([std[(arm, s)] for s in seeds])
        rel = np.array([std[(arm, s)] / std[("ntp", s)] - 1 for s in seeds])
        sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        vs = (
            "-"
            if arm == "ntp"
            else f"{100 * rel.mean():+.1f}% (range {100 * rel.min():+.1f}% to {100 * rel.max():+.1f}%)"
        )
        lines.append(f"| {arm} | {v.mean():.3f} ± {sd:.3f} | {vs} |")
    return "\n".join(lines) + "\n"


def report(out: dict, path: Path, figure: bool = True) -> None:
    """Print the tables, and write the markdown tables (``.md``) and the figure beside the JSON at ``path``."""
    print_table(out["summary"], out["confidence_std"])
    md = path.with_suffix(".md")
    md.write_text(markdown(out), encoding="utf-8")
    print(f"tables: {md}")
    if figure:
        fig = plot(out["runs"], list(out["setup"]["arms"]), path.with_suffix(".png"))
        if fig:
            print(f"figure: {fig}")


def plot(runs: list[dict], arms: list[str], path: Path) -> str | None:
    """One column per split. Top: held-out NLL per epoch per arm, mean and min-max over seeds. Bottom (matplotlib
    only): each arm minus ntp, paired by seed, the same way: the arms differ by far less than training moves the
    NLL, so the top row alone cannot show them apart."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    nll = {(r["arm"], r["seed"], r["split"], r["epoch"]): r["heldout_nll"] for r in runs}
    series, diffs = {}, {}
    for split in SPLITS:
        for arm in arms:
            epochs = sorted({r["epoch"] for r in runs if r["arm"] == arm})
            seeds = sorted({r["seed"] for r in runs if r["arm"] == arm})
            vals = np.array([[nll[(arm, s, split, e)] for s in seeds] for e in epochs])
            d = vals - np.array([[nll[("ntp", s, split, e)] for s in seeds] for e in epochs])
            series[(split, arm)] = (epochs, vals.mean(1), vals.min(1), vals.max(1))
            diffs[(split, arm)] = (epochs, d.mean(1), d.min(1), d.max(1))
    if plt is not None:
        fig, axes = plt.subplots(2, len(SPLITS), figsize=(5 * len(SPLITS), 7), sharex=True)
        for col, split in enumerate(SPLITS):
            top, bottom = axes[0, col], axes[1, col]
            for i, arm in enumerate(arms):
                color = f"C{i}"
                for ax, data in ((top, series), (bottom, diffs)):
                    e, m, lo, hi = data[(split, arm)]
                    ax.plot(e, m, marker="o", color=color, label=arm)
                    ax.fill_between(e, lo, hi, color=color, alpha=0.15)
            top.set_title(f"held-out NLL ({split})")
            bottom.set_title(f"minus ntp, paired by seed ({split})")
            bottom.axhline(0, color="black", linewidth=0.8)
            bottom.set_xlabel("epoch")
            bottom.xaxis.get_major_locator().set_params(integer=True)
        axes[0, 0].set_ylabel("response NLL (nats/token)")
        axes[1, 0].set_ylabel("difference (nats/token)")
        axes[0, 0].legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return str(path)
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        print("no figure: neither matplotlib nor plotly is installed")
        return None
    fig = make_subplots(rows=1, cols=len(SPLITS), subplot_titles=[f"held-out NLL ({s})" for s in SPLITS])
    for c, split in enumerate(SPLITS, 1):
        for arm in arms:
            e, m, lo, hi = series[(split, arm)]
            err = dict(type="data", symmetric=False, array=np.subtract(hi, m), arrayminus=np.subtract(m, lo))
            fig.add_trace(go.Scatter(x=e, y=m, error_y=err, name=arm, legendgroup=arm, showlegend=c == 1), row=1, col=c)
    try:
        fig.write_image(str(path), width=1500, height=450)
        return str(path)
    except Exception as e:  # no kaleido / no browser for the static export
        html = path.with_suffix(".html")
        fig.write_html(str(html), include_plotlyjs="cdn")
        print(f"no PNG figure ({type(e).__name__}: {str(e).splitlines()[0][:120]}); wrote {html} instead")
        return str(html)


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("transformers", "trainer_plugin", "profiler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.report:
        path = Path(args.report)
        report(json.loads(path.read_text(encoding="utf-8")), path, figure=not args.no_figure)
        return {}
    t0 = time.perf_counter()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sftmix_study_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.profile:
        args.profile_path = str(args.profile)
    else:
        log.info("profiling %s examples with C=%d checkpoints in %s", args.n_examples, args.n_checkpoints, work)
        args.profile_path = make_profile(args, work)
    profile_seconds = time.perf_counter() - t0
    if args.model:
        args.model_path = str(args.model)
    else:
        from profiler.assets import smollm2_checkpoint

        args.model_path = str(smollm2_checkpoint())
    seeds = list(range(args.seeds))
    cache: dict[tuple, dict] = {}

    # 1. The learning rate, chosen on ntp alone before any Mixup arm runs.
    sweep = []
    if args.lr is not None:
        lr = args.lr
    else:

        def try_lr(cand: float) -> None:
            res = cache[("ntp", seeds[0], cand)] = train_run(args, "ntp", seeds[0], cand, work)
            sweep.append({"lr": cand, "seed": seeds[0], "final_heldout_nll": final_nll(res)})

        for cand in sorted(float(x) for x in args.sweep_lr.split(",")):
            try_lr(cand)
        lr = best_lr(sweep)
        for _ in range(args.sweep_extend):
            nxt = next_lr([s["lr"] for s in sweep], lr)
            if nxt is None:
                break
            log.info("learning rate %g is at the edge of the grid: trying %g too", lr, nxt)
            try_lr(nxt)
            lr = best_lr(sweep)
        if next_lr([s["lr"] for s in sweep], lr) is not None:
            log.warning("learning rate %g is still at the edge of the sweep %s", lr, sorted(s["lr"] for s in sweep))
        log.info("learning rate %g chosen by the ntp sweep %s", lr, sweep)

    # 2. Every arm and seed at that rate (the sweep's run at the chosen rate is ntp's first seed).
    results = {}
    for seed in seeds:
        for arm in args.arms:
            results[(arm, seed)] = cache.get((arm, seed, lr)) or train_run(args, arm, seed, lr, work)

    runs = [r for res in results.values() for r in res["runs"]]
    stds = [{"arm": arm, "seed": seed, "value": res["confidence_std"]} for (arm, seed), res in results.items()]
    first = results[("ntp", seeds[0])]
    setup = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "device": args.device,
        "machine": machine(args.device),
        "versions": versions(),
        "profile": args.profile_path,
        "profiled_here": not args.profile,
        "reference": args.reference or ("packaged SmolLM2-135M-Instruct" if not args.profile else None),
        "n_examples": args.n_examples,
        "n_checkpoints": args.n_checkpoints if not args.profile else None,
        "model": args.model_path,
        "arms": {a: ARMS[a] for a in args.arms},
        "seeds": seeds,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lora": args.lora,
        "lora_r": args.lora_r if args.lora else None,
        "max_length": args.max_length,
        "optimizer": "AdamW, weight decay 0.1, cosine, warm-up 0.1 (sftmix train defaults)",
        "learning_rate": lr,
        "lr_rule": "fixed by --lr"
        if args.lr is not None
        else f"lowest final held-out NLL of ntp (first seed); grid extended past its edge up to {args.sweep_extend}x",
        "lr_at_grid_edge": args.lr is None and next_lr([s["lr"] for s in sweep], lr) is not None,
        "lr_sweep": sweep,
        "eval_fraction": args.eval_fraction,
        "eval_seed": EVAL_SEED,
        "n_train": first["n_train"],
        "n_heldout": len(first["heldout_ids"]),
        "heldout_example_ids": first["heldout_ids"],
        "heldout_digest": {f"{a}/{s}": digest(r["heldout_ids"]) for (a, s), r in results.items()},
        "pairs_digest": {f"{a}/{s}": r["pairs_digest"] for (a, s), r in results.items()},
        "random_split": {
            f"{a}/{s}": {"n_confident": r["n_confident"], "n_flipped": r["n_flipped"]}
            for (a, s), r in results.items()
            if "n_flipped" in r
        },
        "confidence": "minus perplexity of each training example under the trained target; std with ddof=0",
        "run_seconds": {f"{a}/{s}": r["seconds"] for (a, s), r in results.items()},
        "profile_seconds": round(profile_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    if args.debug_pairs:
        setup["pairs"] = {f"{a}/{s}": r["pairs"] for (a, s), r in results.items()}
    out = {"setup": setup, "runs": runs, "confidence_std": stds}
    table = summary(runs, args.arms, seeds)
    out["summary"] = table
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    report(out, path, figure=not args.no_figure)
    print(f"results: {path} ({setup['total_seconds']:.0f}s in all)")
    if not args.workdir and args.profile:
        shutil.rmtree(work, ignore_errors=True)
    elif not args.profile:
        print(f"profile kept for reruns (--profile): {args.profile_path}")
    return out


if __name__ == "__main__":
    main()
