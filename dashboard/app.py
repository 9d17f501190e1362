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
# Streamlit serves the default page at "/" whatever its url_path (its URL path is always ""), so "/home" or
# "/overview" would answer "Page not found": hidden pages at those paths send the browser to the default page. The
# default page's own url_path only names it inside Streamlit (its page hash), so it must differ from theirs.
overview = st.Page(VIEWS / "overview.py", title="Overview", url_path="main", default=True)
OVERVIEW_ALIASES = ("home", "overview")  # URL paths that open the overview


def _to_overview() -> None:
    st.switch_page(overview)


pages = [
    overview,
    st.Page(VIEWS / "data_map.py", title="Data map", url_path="data_map"),
    st.Page(VIEWS / "semantic_map.py", title="Semantic map", url_path="semantic_map"),
    st.Page(VIEWS / "dynamics.py", title="Training dynamics", url_path="dynamics"),
    st.Page(VIEWS / "explorer.py", title="Explorer", url_path="explorer"),
    st.Page(VIEWS / "hard_tokens.py", title="Hard tokens", url_path="hard_tokens"),
    st.Page(VIEWS / "export.py", title="Export", url_path="export"),
    *(st.Page(_to_overview, title="Overview", url_path=alias, visibility="hidden") for alias in OVERVIEW_ALIASES),
]
if state.compare_path():
    pages.append(st.Page(VIEWS / "compare.py", title="Compare", url_path="compare"))
page = st.navigation(pages)
st.sidebar.caption(f"Table: `{Path(path).name}` (read-only)")
st.session_state["filter"] = state.filter_sidebar(path)
page.run()
