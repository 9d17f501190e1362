"""The table schema (see DESIGN.md) and its read views. Bump the major version for changes a reader cannot ignore.

Readers accept any 1.x file and look at what the file holds, never at its minor version:

- 1.0 added ``confidence.region`` (the cartography region, issue 15) without a version change: files written
  before it lack the column, and the read views compute it on read (:data:`REGION_SQL`); a writer that opens
  such a file adds and fills it.
- 1.1 (issue 15) adds three tables: ``token_scores`` (each scored response token's NLL, per example and
  checkpoint), ``example_tokens`` (the decoded text of those tokens, once per example) and ``ifd`` (the
  instruction-following difficulty, per example). Files written before them lack the tables: the reader puts
  empty stand-ins of the same columns in their place (:data:`STAND_INS`), so ``example_view.ifd`` is NULL and
  ``token_view`` is empty. A writer that opens such a file creates the tables (empty) and records 1.1.
"""

from __future__ import annotations

from profiler.errors import TableError

SCHEMA_VERSION = "1.1"

# The names ``confidence.split`` and ``confidence.region`` hold: the median split's halves, and the data map's
# regions (profiler.confidence computes both). Every module that names them takes them from here.
SPLITS = CONFIDENT, UNCONFIDENT = ("confident", "unconfident")
REGIONS = EASY, AMBIGUOUS, HARD = ("easy-to-learn", "ambiguous", "hard-to-learn")

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key VARCHAR PRIMARY KEY,
    value JSON
);
CREATE TABLE IF NOT EXISTS examples (
    example_id VARCHAR PRIMARY KEY,   -- content hash of the normalized messages, '-n' for the n-th repeat
    row_index BIGINT NOT NULL,        -- position in the whole input (all sources, in order)
    source VARCHAR NOT NULL,          -- source name (file stem, or NAME in NAME=PATH)
    source_file VARCHAR NOT NULL,
    file_row BIGINT NOT NULL,         -- 0-based row within source_file
    messages JSON,                    -- normalized chat messages; NULL when the row was unusable
    prompt VARCHAR,
    response VARCHAR,
    record JSON,                      -- the original row, for export
    n_prompt_tokens INTEGER,
    n_response_tokens INTEGER,
    status VARCHAR NOT NULL,          -- 'ok', or a short reason the row was not scored
    status_detail VARCHAR,            -- the full error message (file, row, field)
    truncated BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS checkpoints (
    checkpoint_id INTEGER PRIMARY KEY,
    step BIGINT,
    fraction DOUBLE,                  -- fraction of the reference epoch
    path VARCHAR NOT NULL,
    kind VARCHAR NOT NULL             -- 'model' or 'adapter'
);
CREATE TABLE IF NOT EXISTS scores (
    example_id VARCHAR NOT NULL,
    checkpoint_id INTEGER NOT NULL,
    nll_sum DOUBLE NOT NULL,
    n_tokens INTEGER NOT NULL,
    mean_nll DOUBLE NOT NULL,
    perplexity DOUBLE NOT NULL,
    PRIMARY KEY (example_id, checkpoint_id)
);
CREATE TABLE IF NOT EXISTS confidence (
    example_id VARCHAR PRIMARY KEY,
    confidence DOUBLE NOT NULL,       -- minus the mean perplexity over checkpoints
    mean_nll DOUBLE NOT NULL,
    variability DOUBLE NOT NULL,      -- population std of perplexity over checkpoints
    split VARCHAR NOT NULL,           -- 'confident' or 'unconfident'
    quantile_bin INTEGER NOT NULL,    -- 0 = least confident bin
    rank BIGINT NOT NULL,             -- 0 = most confident
    region VARCHAR                    -- 'easy-to-learn', 'ambiguous', 'hard-to-learn'; absent in older files
);
CREATE TABLE IF NOT EXISTS embeddings (
    example_id VARCHAR PRIMARY KEY,
    vector FLOAT[],
    umap_x DOUBLE,
    umap_y DOUBLE
);
CREATE TABLE IF NOT EXISTS token_scores (
    example_id VARCHAR NOT NULL,
    checkpoint_id INTEGER NOT NULL,
    nll FLOAT[] NOT NULL,             -- each scored response token's NLL, in position order; sums to scores.nll_sum
    PRIMARY KEY (example_id, checkpoint_id)
);
CREATE TABLE IF NOT EXISTS example_tokens (
    example_id VARCHAR PRIMARY KEY,
    tokens VARCHAR[] NOT NULL         -- the decoded text of the same tokens, same length and order as nll
);
CREATE TABLE IF NOT EXISTS ifd (
    example_id VARCHAR PRIMARY KEY,
    checkpoint_id INTEGER,            -- the checkpoint it was computed at; NULL for another model (--ifd-model)
    model VARCHAR NOT NULL,           -- that checkpoint's or model's path
    nll_sum_alone DOUBLE NOT NULL,    -- NLL of the response tokens scored without the prompt
    n_tokens INTEGER NOT NULL,        -- tokens in nll_sum_alone
    ifd DOUBLE NOT NULL               -- PPL(response | prompt) / PPL(response alone)
);
"""

TABLES = (
    "meta",
    "examples",
    "checkpoints",
    "scores",
    "confidence",
    "embeddings",
    "token_scores",
    "example_tokens",
    "ifd",
)

# Empty relations with the columns of the tables 1.1 added, read in their place from files written before them.
STAND_INS = {
    "token_scores": "SELECT NULL::VARCHAR AS example_id, NULL::INTEGER AS checkpoint_id, NULL::FLOAT[] AS nll",
    "example_tokens": "SELECT NULL::VARCHAR AS example_id, NULL::VARCHAR[] AS tokens",
    "ifd": "SELECT NULL::VARCHAR AS example_id, NULL::INTEGER AS checkpoint_id, NULL::VARCHAR AS model, "
    "NULL::DOUBLE AS nll_sum_alone, NULL::INTEGER AS n_tokens, NULL::DOUBLE AS ifd",
}

# The cartography region of each row of ``confidence``, from its stored columns: the same rule, and the same
# floats, as :func:`profiler.confidence.compute_confidence` (ambiguous: the n // 3 rows of highest relative
# variability, variability / mean perplexity, ties by example_id; otherwise easy-to-learn in the confident half,
# hard-to-learn in the unconfident half). For files written before the column existed.
REGION_SQL = """
    CASE WHEN row_number() OVER (ORDER BY variability / -confidence DESC, example_id) <= count(*) OVER () // 3
         THEN 'ambiguous'
         WHEN split = 'confident' THEN 'easy-to-learn'
         ELSE 'hard-to-learn' END
"""

# Read views: what readers outside ``profiler/table/`` (the dashboard's queries) may query. They are not stored in
# the file (a read-only connection cannot create persistent views, and older files would lack them): the reader
# creates them as TEMP views on every connection and cursor it hands out, so they always match this version.
VIEWS = {
    # The confidence rows with their region (stored, or computed on read for older files: see view_ddl).
    "confidence_view": "SELECT * FROM confidence",
    # One row per example: the example, its confidence columns (split 'unscored' where it has none), its map
    # coordinates (never the vectors) and its IFD (NULL where it has none).
    "example_view": """
        SELECT e.example_id, e.row_index, e.source, e.source_file, e.file_row, e.status, e.status_detail, e.prompt,
               e.response, e.messages, e.record, e.n_prompt_tokens, e.n_response_tokens, e.truncated,
               c.confidence, c.mean_nll, c.variability, coalesce(c.split, 'unscored') AS split, c.quantile_bin,
               c.rank, c.region, m.umap_x, m.umap_y, f.ifd
        FROM examples e
        LEFT JOIN confidence_view c USING (example_id)
        LEFT JOIN (SELECT example_id, umap_x, umap_y FROM embeddings) m USING (example_id)
        LEFT JOIN (SELECT example_id, ifd FROM ifd) f USING (example_id)
    """,
    # Each example's texts alone: a lookup of a page of examples by id reads the examples table only (through
    # example_view it joins every example's confidence, coordinates and IFD first: 6x slower at 1M).
    "text_view": "SELECT example_id, prompt, response FROM examples",
    # One row per (example, checkpoint) score, with the checkpoint's position and the example's split and bin
    # (NULL where the example has no confidence yet).
    "score_view": """
        SELECT s.example_id, s.checkpoint_id, k.step, k.fraction, s.nll_sum, s.n_tokens, s.mean_nll, s.perplexity,
               c.split, c.quantile_bin, c.region
        FROM scores s
        JOIN checkpoints k USING (checkpoint_id)
        LEFT JOIN confidence_view c USING (example_id)
    """,
    # One row per (example, checkpoint) with token scores: each scored response token's NLL (``nll``) and its
    # decoded text (``tokens``, the same length and order), with the checkpoint's position.
    "token_view": """
        SELECT t.example_id, t.checkpoint_id, k.step, k.fraction, t.nll, x.tokens
        FROM token_scores t
        JOIN checkpoints k USING (checkpoint_id)
        LEFT JOIN example_tokens x USING (example_id)
    """,
    "checkpoint_view": "SELECT checkpoint_id, step, fraction, path, kind FROM checkpoints",
    "meta_view": "SELECT key, value FROM meta",
}


def view_ddl(has_region: bool = True, missing: tuple[str, ...] = ()) -> str:
    """The statements creating :data:`VIEWS` as TEMP views (on one connection or cursor).

    Args:
        has_region: whether the file's ``confidence`` table has the ``region`` column; if not, the views compute
            it with :data:`REGION_SQL`.
        missing: tables of :data:`STAND_INS` the file lacks (:func:`missing_tables`): an empty TEMP view of the
            same name and columns stands in for each, so the views (and queries of the table) read as empty.
    """
    views = {name: f"{STAND_INS[name]} WHERE false" for name in missing}
    views.update(VIEWS)
    if not has_region:
        views["confidence_view"] = f"SELECT *, {REGION_SQL.strip()} AS region FROM confidence"
    return ";\n".join(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql.strip()}" for name, sql in views.items()) + ";"


def has_region_column(con) -> bool:
    """Whether the ``confidence`` table of ``con``'s file has the ``region`` column (files written before it do not)."""
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = 'main' AND table_name = 'confidence' AND column_name = 'region'"
        ).fetchone()[0]
    )


def missing_tables(con) -> tuple[str, ...]:
    """The tables of :data:`STAND_INS` that ``con``'s file lacks (all three in files written before 1.1)."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = 'main'"
    ).fetchall()
    present = {r[0] for r in rows}
    return tuple(name for name in STAND_INS if name not in present)


def is_older_minor(found: str) -> bool:
    """Whether a stored 1.x version is older than :data:`SCHEMA_VERSION` (a writer then records its own)."""
    try:
        return int(str(found).split(".")[1]) < int(SCHEMA_VERSION.split(".")[1])
    except (IndexError, ValueError):
        return False


def check_version(found: str | None, path: str) -> None:
    """Refuse a file written with another major schema version."""
    if found is None:
        raise TableError(f"{path} is not an sftmix confidence table (no schema_version in meta)")
    if str(found).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise TableError(
            f"{path} has schema version {found}; this sftmix reads {SCHEMA_VERSION.split('.')[0]}.x. "
            "Re-run the profile with this version, or use the sftmix version that wrote it."
        )
