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
