"""Semantic map: the UMAP of the examples' embeddings; a box or lasso selection filters the explorer."""

from dataclasses import replace

import streamlit as st

from dashboard import figures, state

path = state.table_path()
flt = state.current_filter()
ov = state.overview(path)
st.title("Semantic map")
if not ov["embedded"]:
    st.info("This profile has no embedding map (profiled with --no-embed or --projection none).")
    st.stop()
colors = ["split", "region", "source", "confidence"] + (["ifd"] if ov["with_ifd"] else [])
color = st.radio("Color by", colors, horizontal=True, key="sem_color")
cap = st.slider("Points drawn at most", 1_000, 200_000, state.POINT_CAP, step=1_000, key="sem_cap")
points, total = state.sample_points(path, replace(flt, ids=None), cap, True)
method = figures.projection_name(ov["projection"])
st.caption(
    f"{method} of mean-pooled final hidden states · showing {points.height:,} of {total:,} examples matching the "
    "filter" + (f" (a random sample: cap {cap:,})" if total > points.height else "")
)
if points.is_empty():
    st.info("No embedded example matches the filter.")
    st.stop()
fig = figures.semantic_map(points, color=color, projection=ov["projection"])
event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("box", "lasso"), key="sem_plot")
picked = figures.selected_ids(fig, event.selection.points if event and event.selection else [])
if picked:
    st.session_state["selected_ids"] = tuple(picked)
    st.success(f"{len(picked):,} examples selected: the explorer and export now show only them.")
elif state.selected_ids():
    st.caption(f"{len(state.selected_ids()):,} examples selected earlier (clear the selection in the sidebar).")
