"""Semantic map: the UMAP of the examples' embeddings, every example in the density layer under a sample of points;
a box or lasso selects every example inside it (in SQL), and the explorer and export then show only them."""

from dataclasses import replace

import streamlit as st

from dashboard import figures, queries, state

path = state.table_path()
flt = state.current_filter()
shape = state.selected_shape()
own = replace(flt, ids=None, shape=None if shape is not None and shape.space == "semantic_map" else flt.shape)
ov = state.overview(path)
st.title("Semantic map")
if not ov["embedded"]:
    st.info(queries.no_map_reason(state.progress(path)))
    st.stop()
colors = ["split", "region", "source", "confidence"] + (["ifd"] if ov["with_ifd"] else [])
c1, c2 = st.columns([3, 2])
color = c1.radio("Color by", colors, horizontal=True, key="sem_color")
shade = c2.radio("Density colour", figures.DENSITY_COLORS, horizontal=True, key="sem_shade")
cap = st.slider("Points drawn at most", 1_000, state.POINT_CAP_MAX, state.POINT_CAP, step=1_000, key="sem_cap")
points, total = state.sample_points(path, own, cap, True)
method = figures.projection_name(ov["projection"])
if points.is_empty():
    st.caption(f"{method} of mean-pooled final hidden states")
    st.info("No embedded example matches the filter.")
    st.stop()
extent, layer, per_axis = state.map_figure_parts(path, own, "semantic_map", total, color, shade)
st.caption(
    f"{method} of mean-pooled final hidden states · "
    + state.map_caption(total, points.height, cap, per_axis, "embedded examples")
)
fig = figures.semantic_map(points, color=color, projection=ov["projection"], density=layer)
if shape is not None and shape.space == "semantic_map":
    figures.shape_outline(fig, shape)
st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("box", "lasso"), key="sem_plot")
state.selection_note(path, own, "semantic_map")
