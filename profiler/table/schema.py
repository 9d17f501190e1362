"""The table schema (see DESIGN.md). Bump the major version for changes a reader cannot ignore."""

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
    rank BIGINT NOT NULL              -- 0 = most confident
);
CREATE TABLE IF NOT EXISTS embeddings (
    example_id VARCHAR PRIMARY KEY,
    vector FLOAT[],
    umap_x DOUBLE,
    umap_y DOUBLE
);
"""

TABLES = ("meta", "examples", "checkpoints", "scores", "confidence", "embeddings")


def check_version(found: str | None, path: str) -> None:
    """Refuse a file written with another major schema version."""
    if found is None:
        raise TableError(f"{path} is not an sftmix confidence table (no schema_version in meta)")
    if str(found).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise TableError(
            f"{path} has schema version {found}; this sftmix reads {SCHEMA_VERSION.split('.')[0]}.x. "
            "Re-run the profile with this version, or use the sftmix version that wrote it."
        )
