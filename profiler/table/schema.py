"""The table schema (see DESIGN.md) and its read views. Bump the major version for changes a reader cannot ignore.

``confidence.region`` (the cartography region, issue 15) is an additive change within 1.0: files written before
it lack the column, so readers check for the column, not the version. The read views then compute it on read
(:data:`REGION_SQL`), and a writer that opens such a file adds and fills it.
"""

from __future__ import annotations

from profiler.errors import TableError

SCHEMA_VERSION = "1.0"

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
"""

TABLES = ("meta", "examples", "checkpoints", "scores", "confidence", "embeddings")

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
    # One row per example: the example, its confidence columns (split 'unscored' where it has none) and its map
    # coordinates (never the vectors).
    "example_view": """
        SELECT e.example_id, e.row_index, e.source, e.source_file, e.file_row, e.status, e.status_detail, e.prompt,
               e.response, e.messages, e.record, e.n_prompt_tokens, e.n_response_tokens, e.truncated,
               c.confidence, c.mean_nll, c.variability, coalesce(c.split, 'unscored') AS split, c.quantile_bin,
               c.rank, c.region, m.umap_x, m.umap_y
        FROM examples e
        LEFT JOIN confidence_view c USING (example_id)
        LEFT JOIN (SELECT example_id, umap_x, umap_y FROM embeddings) m USING (example_id)
    """,
    # One row per (example, checkpoint) score, with the checkpoint's position and the example's split and bin
    # (NULL where the example has no confidence yet).
    "score_view": """
        SELECT s.example_id, s.checkpoint_id, k.step, k.fraction, s.nll_sum, s.n_tokens, s.mean_nll, s.perplexity,
               c.split, c.quantile_bin, c.region
        FROM scores s
        JOIN checkpoints k USING (checkpoint_id)
        LEFT JOIN confidence_view c USING (example_id)
    """,
    "checkpoint_view": "SELECT checkpoint_id, step, fraction, path, kind FROM checkpoints",
    "meta_view": "SELECT key, value FROM meta",
}


def view_ddl(has_region: bool = True) -> str:
    """The statements creating :data:`VIEWS` as TEMP views (on one connection or cursor).

    ``has_region``: whether the file's ``confidence`` table has the ``region`` column; if not, the views
    compute it with :data:`REGION_SQL`.
    """
    views = dict(VIEWS)
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


def check_version(found: str | None, path: str) -> None:
    """Refuse a file written with another major schema version."""
    if found is None:
        raise TableError(f"{path} is not an sftmix confidence table (no schema_version in meta)")
    if str(found).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise TableError(
            f"{path} has schema version {found}; this sftmix reads {SCHEMA_VERSION.split('.')[0]}.x. "
            "Re-run the profile with this version, or use the sftmix version that wrote it."
        )
