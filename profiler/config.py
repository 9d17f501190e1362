"""The options of every `sftmix` subcommand, each declared once (type, default, help, choices, range).

The CLI builds its flags from these dataclasses (:mod:`profiler.options`), Python callers construct them
directly; either way ``__post_init__`` checks every value before any work starts. Nothing here loads torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from profiler.assets import PACKAGED_MODEL
from profiler.data.formats import FORMATS
from profiler.data.render import TEMPLATES
from profiler.options import (
    DEVICE_PATTERN,
    DEVICE_TEXT,
    LR_SCHEDULERS,
    OptionError,
    as_list,
    as_mapping,
    check_options,
    option,
)

# --format: detected per file (auto), or one of the formats profiler.data.formats reads.
RECORD_FORMATS = ("auto", *FORMATS)
DTYPES = ("auto", "float32", "bfloat16", "float16")
PROJECTIONS = ("auto", "umap", "pca", "none")
TOKEN_SCORES = ("last", "all", "none")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/N"`` (0 <= i < N) -> ``(i, N)``; None stays None."""
    if spec is None:
        return None
    m = _SHARD.match(str(spec))
    if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
        raise OptionError(f"--shard {spec!r}: must be i/N with 0 <= i < N (e.g. 0/4)")
    return int(m.group(1)), int(m.group(2))


def _is_shard(spec: str) -> bool:
    try:
        parse_shard(spec)
    except OptionError:
        return False
    return True


# profiler.table.reader.EXPORT_SPLITS, written out so that the options load no DuckDB (a test keeps them equal).
EXPORT_SPLITS = ("confident", "unconfident", "all")


@dataclass
class ScoreConfig:
    """Settings of a scoring run (`sftmix score`, and the scoring half of `sftmix profile`), recorded in ``meta``."""

    model: str = option(
        help=f"reference model (directory or hub name; {PACKAGED_MODEL}: the demo's packaged model); base model of "
        "adapter checkpoints"
    )
    data: list[str] = option(help="data file, datasets directory or hub name, optionally NAME=PATH (repeatable)")
    out: str = option(help="the DuckDB confidence table to write (resumed when it exists)")
    checkpoints: list[str] = option(
        default_factory=list,
        flag="checkpoint",
        help="checkpoint directory to score (a Trainer output dir means all its checkpoint-N); "
        "none: score the model itself (repeatable)",
    )
    format: str = option("auto", "record format", choices=RECORD_FORMATS)
    fields: dict[str, str] = option(
        default_factory=dict, flag="field", help="field-name override NAME=COLUMN (repeatable)"
    )
    split: str = option("train", "split of a multi-split dataset")
    template: str = option("auto", "auto (chat template if any), chat or alpaca", choices=TEMPLATES)
    max_length: int = option(2048, "longest example in tokens", ge=2)
    truncate: bool = option(False, "truncate longer examples instead of rejecting them")
    on_error: str = option("raise", "raise, or skip (bad rows kept with their reason)", choices=("raise", "skip"))
    num_proc: int = option(0, "processes rendering the data, once per run (0: one per CPU)", ge=0)
    cache_dir: str | None = option(
        None, "folder of the rendered-data cache that resumes and shard workers read (default: OUT_data beside OUT)"
    )
    backend: str = option(
        "auto",
        "scoring backend: auto (vLLM if installed and on a GPU, else torch), torch or vllm",
        choices=("auto", "torch", "vllm"),
    )
    tensor_parallel_size: int = option(1, "vLLM: GPUs per engine", ge=1)
    gpu_memory_utilization: float = option(0.9, "vLLM: fraction of GPU memory to use", gt=0, le=1)
    device: str = option("auto", "where to score", pattern=DEVICE_PATTERN, describe=DEVICE_TEXT)
    dtype: str = option("auto", "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16", choices=DTYPES)
    max_tokens: int | None = option(None, "padded tokens per scoring batch (default: 1024 on CPU, 16384 on GPU)", ge=1)
    max_batch_size: int | None = option(None, "cap on rows per scoring batch", ge=1)
    n_bins: int = option(10, "quantile bins of confidence", ge=1)
    embed: bool = option(True, "store each example's mean-pooled final hidden state at the last checkpoint (same pass)")
    token_scores: str = option(
        "last",
        "store each response token's NLL (and the tokens' text) at the last checkpoint, at all, or none",
        choices=TOKEN_SCORES,
    )
    ifd: bool = option(
        True, "compute IFD = PPL(response | prompt) / PPL(response alone) at the last checkpoint (or --ifd-model)"
    )
    ifd_model: str | None = option(
        None, "compute IFD with this model or adapter (e.g. the base model) instead of the last checkpoint"
    )
    projection: str = option(
        "auto", "2-D map of the embeddings: auto (UMAP if installed, else PCA), umap, pca or none", choices=PROJECTIONS
    )
    projection_sample: int = option(
        50_000, "fit the projection on at most this many examples, transform the rest", ge=2
    )
    projection_seed: int = option(0, "seed of the projection", ge=0)
    shard: str | None = option(
        None,
        "i/N: score only shard i of N into OUT's part file (combine the parts with `sftmix merge`)",
        check=_is_shard,
        describe="i/N with 0 <= i < N (e.g. 0/4)",
    )
    workers: int = option(
        1, "scoring workers on this node, worker k on cuda:k, merged at the end; 0: one per GPU", ge=0
    )
    ray: str | None = option(
        None,
        "score with Ray Data actors: auto (this machine's cluster), an address, or local (start one); "
        "paths must be readable on every node",
    )
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        self.data = [str(d) for d in as_list(self.data)]
        self.checkpoints = [str(c) for c in as_list(self.checkpoints)]
        self.fields = as_mapping(self.fields, "field")
        self.out = str(self.out) if self.out is not None else None
        self.model = str(self.model) if self.model is not None else None
        self.ifd_model = str(self.ifd_model) if self.ifd_model is not None else None
        check_options(self)
        if self.ifd_model is not None and not self.ifd_model.strip():
            raise OptionError(f"--ifd-model {self.ifd_model!r}: must be a model directory or hub name")
        if self.ifd_model is not None and not self.ifd:
            raise OptionError(f"--ifd-model {self.ifd_model!r}: IFD is turned off (--no-ifd); drop one of them")
        if not self.data:
            raise OptionError("--data: at least one data source is needed")
        if self.ray and (self.backend == "vllm" or self.workers != 1):
            raise OptionError("--ray runs the torch scorer in Ray actors; drop --backend vllm / --workers")
        if self.workers != 1 and self.shard:
            raise OptionError("--shard runs one worker; drop --workers")


@dataclass
class FinetuneConfig:
    """Hyper-parameters of the reference run; defaults suit a small, weak reference model."""

    n_checkpoints: int = option(5, "checkpoints C, evenly spaced, the last at the end", ge=1)
    epochs: float = option(1.0, "training epochs of the reference model", gt=0)
    lora: bool = option(False, "train a LoRA adapter instead of all weights")
    lora_r: int = option(16, "LoRA rank", ge=1)
    lora_alpha: int = option(32, "LoRA alpha", ge=1)
    learning_rate: float | None = option(None, "peak learning rate (default: 1e-5 full, 2e-4 LoRA)", gt=0)
    batch_size: int = option(8, "examples per device per step", ge=1)
    grad_accum: int = option(1, "gradient accumulation steps", ge=1)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    warmup_ratio: float = option(0.03, "fraction of steps of linear warm-up", ge=0, lt=1)
    lr_scheduler: str = option("cosine", "learning-rate schedule", choices=LR_SCHEDULERS)
    seed: int = option(42, "seed of initialization, data order and dropout", ge=0)
    gradient_checkpointing: bool | None = option(None, "recompute activations (default: on for GPU)")
    checkpoint_dir: str | None = option(None, "where checkpoints go (default: next to the table)")
    keep_checkpoints: str = option(
        "all", "after scoring keep all checkpoint weights, the last, or none", choices=("all", "last", "none")
    )

    def __post_init__(self) -> None:
        check_options(self)

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.lora else 1e-5)


@dataclass
class ProfileExtras:
    """`sftmix profile` options beyond scoring and fine-tuning."""

    checkpoints_from: str | None = option(None, "score the checkpoints in this directory instead of fine-tuning")


@dataclass
class ExportOptions:
    table: str = option(help="the confidence table", positional=True)
    output: str = option(
        help="output file (.jsonl, .json, .parquet) or directory (a saved Hugging Face dataset)", aliases=("-o",)
    )
    split: str = option("all", "which half to export", choices=EXPORT_SPLITS)
    format: str | None = option(
        None,
        "output format (default: from the output's suffix; a directory is hf)",
        choices=("jsonl", "json", "parquet", "hf"),
    )
    overwrite: bool = option(False, "replace an existing output that an export wrote")

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class InfoOptions:
    table: str = option(help="the confidence table", positional=True)
    json: bool = option(False, "print JSON")

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class CompareOptions:
    a: str = option(help="first table (A)", positional=True)
    b: str = option(help="second table (B)", positional=True)
    json: bool = option(False, "print JSON")
    flips: int = option(10, "flipped examples to list", ge=0)
    flips_out: str | None = option(None, "write all flipped examples to this JSONL file")

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class MergeOptions:
    out: str = option(
        help="the merged table; its parts are OUT-STEM.part-i-of-N.duckdb beside it by default", positional=True
    )
    parts: list[str] = option(default_factory=list, help="part files (default: found beside OUT)", positional=True)
    n_bins: int = option(10, "quantile bins of confidence", ge=1)
    projection: str = option("auto", "2-D map of the embeddings", choices=PROJECTIONS)
    seed: int = option(0, "seed of the projection", ge=0)

    def __post_init__(self) -> None:
        self.parts = [str(p) for p in as_list(self.parts)]
        check_options(self)


@dataclass
class DashboardOptions:
    table: str = option(help="the confidence table", positional=True)
    port: int = option(8501, "port to serve on; 0 picks a free one", ge=0, le=65535)
    host: str = option("127.0.0.1", "address to bind (default: localhost only; 0.0.0.0 to share)")
    compare: str | None = option(None, "a second profile of the same data, for the compare page")

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class DemoOptions:
    workdir: str = option("demo_run", "where the sample data, checkpoints and table go")
    n_faq: int = option(150, "FAQ examples to sample (503 in all)", ge=0)
    n_chat: int = option(150, "chatterbot dialogs to sample (~1.1k in all)", ge=0)
    n_checkpoints: int = option(3, "reference checkpoints to score", ge=1)
    lora: bool = option(True, "LoRA (default) or full fine-tuning (--no-lora)")
    max_length: int = option(384, "longer examples are truncated", ge=2)
    seed: int = option(0, "seed of the sample and the run", ge=0)
    device: str = option("auto", "where to run", pattern=DEVICE_PATTERN, describe=DEVICE_TEXT)
    dtype: str = option("auto", "model dtype", choices=DTYPES)
    dashboard: bool = option(True, "open the dashboard on the table when done (Ctrl-C stops it)")
    port: int = option(8501, "dashboard port (0: a free one)", ge=0, le=65535)

    def __post_init__(self) -> None:
        check_options(self)
        if self.n_faq + self.n_chat < 2:
            raise OptionError("--n-faq plus --n-chat must be at least 2 (a median split needs two examples)")
