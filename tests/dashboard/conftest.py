"""Dashboard fixtures: a profile with token scores at every checkpoint and IFD, holding examples whose text would
run as HTML or script if a page put it in the page unescaped; and a profile written before token scores existed."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from benchmarks.synthetic import write_synthetic_profile
from profiler.config import ScoreConfig
from profiler.finetune import FinetuneConfig
from profiler.pipeline import run_profile
from tests.conftest import write_jsonl

# Each would change the page if it ran: the browser test checks the title and window.__pwned.
SCRIPT = "<script>document.title='pwned';window.__pwned=1</script>"
INJECT_ROWS = [
    {
        "instruction": "Show me some HTML",
        "output": f'Sure: {SCRIPT} and <b>bold</b> &amp; <img src=x onerror="window.__pwned=2">.\n\tIndented\n  two',
    },
    {"instruction": "Markdown too?", "output": "**not bold** `code` [link](javascript:alert(1)) :red[x] $x^2$"},
]
N_INJECT = len(INJECT_ROWS)


@pytest.fixture(scope="session")
def token_profile(tmp_path_factory, tiny_llama, small_profile, profile_data) -> Path:
    """The dashboard data plus :data:`INJECT_ROWS`, scored at small_profile's three reference checkpoints (no
    second fine-tuning) with token scores at every checkpoint (``--token-scores all``) and IFD at the last."""
    root = tmp_path_factory.mktemp("token_profile")
    data = [*profile_data, f"inject={write_jsonl(root / 'inject.jsonl', INJECT_ROWS)}"]
    con = duckdb.connect(str(small_profile), read_only=True)
    first_checkpoint = con.execute("SELECT path FROM checkpoints ORDER BY checkpoint_id LIMIT 1").fetchone()[0]
    con.close()
    out = root / "tokens.duckdb"
    score = ScoreConfig(
        model=str(tiny_llama), data=data, out=str(out), on_error="skip", progress=False, token_scores="all"
    )
    ft = FinetuneConfig(n_checkpoints=3, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0)
    run_profile(score, ft, checkpoints_from=str(Path(first_checkpoint).parent))
    return out


@pytest.fixture(scope="session")
def long_profile(tmp_path_factory) -> Path:
    """A synthetic profile (token scores at every checkpoint, IFD) whose first usable example, syn…01, has a
    2,000-token response."""
    out = tmp_path_factory.mktemp("long_profile") / "long.duckdb"
    return write_synthetic_profile(out, 40, n_checkpoints=3, token_scores="all", ifd=True, long_response=2000)


LONG_ID = "syn0000000000001"


@pytest.fixture(scope="session")
def old_profile(tmp_path_factory) -> Path:
    """A profile as schema 1.0 wrote it: no token_scores, example_tokens or ifd tables."""
    root = tmp_path_factory.mktemp("old_profile")
    new = write_synthetic_profile(root / "new.duckdb", 40, n_checkpoints=2)
    out = root / "old.duckdb"
    shutil.copy(new, out)
    con = duckdb.connect(str(out))
    for table in ("token_scores", "example_tokens", "ifd"):
        con.execute(f"DROP TABLE {table}")
    con.execute("UPDATE meta SET value = '\"1.0\"' WHERE key = 'schema_version'")
    con.close()
    return out


N_UNFINISHED = 40  # examples of the unfinished profile (row 0 unusable, as synthetic profiles go)
N_TOKEN_SCORED = 12  # of them scored at the last checkpoint (with token NLLs and embeddings) so far


@pytest.fixture(scope="session")
def unfinished_profile(tmp_path_factory) -> Path:
    """A profile as a look at it mid-run finds it: fine-tuned, scored at the first two of three checkpoints and, at
    the last, for the first :data:`N_TOKEN_SCORED` usable examples only (their token NLLs and embeddings with
    them), no confidence and no map yet; its meta records the data and fine-tune stages done, the score stage
    started but not finished (with the time of an earlier segment), and a run config that asked for an embedding."""
    import numpy as np
    import polars as pl

    from benchmarks.synthetic import synthetic_examples, synthetic_tokens
    from profiler.table import CheckpointInfo, TableWriter

    out = tmp_path_factory.mktemp("unfinished_profile") / "run.duckdb"
    rng = np.random.default_rng(0)
    toks, _ = synthetic_tokens(N_UNFINISHED, rng)
    examples = synthetic_examples(N_UNFINISHED, toks.select("i", "response", "n_response_tokens"))
    ok = examples.filter(pl.col("status") == "ok")
    ids, n_tok = ok["example_id"], ok["n_response_tokens"]
    with TableWriter(out) as t:
        t.init_examples(examples, "unfinished", {"synthetic": True})
        cids = t.register_checkpoints([CheckpointInfo(f"run/checkpoint-{k + 1}", k + 1, (k + 1) / 3) for k in range(3)])
        for k, cid in enumerate(cids[:2]):
            nll = (2.0 - 0.5 * k + rng.random(ok.height)) * n_tok.to_numpy()
            t.write_scores(cid, pl.DataFrame({"example_id": ids, "nll_sum": nll, "n_tokens": n_tok}))
        head = ok.head(N_TOKEN_SCORED)
        per_token = [list(rng.random(int(n)).astype(np.float32) * 3) for n in head["n_response_tokens"]]
        last = pl.DataFrame(
            {
                "example_id": head["example_id"],
                "nll_sum": [float(sum(v)) for v in per_token],
                "n_tokens": head["n_response_tokens"],
                "token_nll": [[float(x) for x in v] for v in per_token],
                "embedding": [[float(x) for x in rng.random(8)] for _ in per_token],
            }
        )
        texts = dict(zip(toks["i"].to_list(), toks["tokens"].to_list()))
        rows = dict(zip(ok["example_id"].to_list(), ok["row_index"].to_list()))
        t.write_scores(cids[2], last, tokens={e: texts[rows[e]] for e in head["example_id"].to_list()})
        t.set_meta(
            {
                "reference_model": "synthetic",
                "score_config": {"embed": True, "projection": "auto", "token_scores": "last", "ifd": True},
                "stages": {"data": "done", "finetune": "done"},
                "stage_seconds": {"data": 2.42, "finetune": 1810.23, "score": 0.02},
            }
        )
    return out
