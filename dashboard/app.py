"""The Streamlit entry point: ``sftmix dashboard run.duckdb`` runs ``streamlit run`` on this file.

Pages live in ``views/`` and stay thin: queries are in :mod:`dashboard.queries`, figures in
:mod:`dashboard.figures`, caching and the shared filter in :mod:`dashboard.state`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import state

VIEWS = Path(__file__).parent / "views"

st.set_page_config(page_title="sftmix dashboard", layout="wide")
path = state.table_path()
# The default page is served at "/" (Streamlit gives it the empty URL path), so "/overview" would answer "Page not
# found": a hidden page at that path sends the browser to the default page.
overview = st.Page(VIEWS / "overview.py", title="Overview", url_path="home", default=True)


def _overview_url() -> None:
    st.switch_page(overview)


pages = [
    overview,
    st.Page(VIEWS / "data_map.py", title="Data map", url_path="data_map"),
    st.Page(VIEWS / "semantic_map.py", title="Semantic map", url_path="semantic_map"),
    st.Page(VIEWS / "dynamics.py", title="Training dynamics", url_path="dynamics"),
    st.Page(VIEWS / "explorer.py", title="Explorer", url_path="explorer"),
    st.Page(VIEWS / "hard_tokens.py", title="Hard tokens", url_path="hard_tokens"),
    st.Page(VIEWS / "export.py", title="Export", url_path="export"),
    st.Page(_overview_url, title="Overview", url_path="overview", visibility="hidden"),
]
if state.compare_path():
    pages.append(st.Page(VIEWS / "compare.py", title="Compare", url_path="compare"))
page = st.navigation(pages)
st.sidebar.caption(f"Table: `{Path(path).name}` (read-only)")
st.session_state["filter"] = state.filter_sidebar(path)
page.run()
