"""sftmix dashboard: a Streamlit app over a confidence table (``sftmix dashboard run.duckdb``).

Pages (``views/``) are thin; queries (:mod:`dashboard.queries`) and figures (:mod:`dashboard.figures`) are pure
functions over a read-only DuckDB connection.
"""

# The launcher names the tables in the environment (this also works under streamlit.testing).
TABLE_ENV = "SFTMIX_TABLE"
COMPARE_ENV = "SFTMIX_COMPARE"
