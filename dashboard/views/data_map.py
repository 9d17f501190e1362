"""Data map: mean perplexity against relative variability over the checkpoints (the dataset-cartography view),
on scales where the bulk of examples spreads out, colored by cartography region, split or IFD. Every example is in
the density layer; a sample of points on top carries the hover; a box or lasso selects every example inside it."""

from dataclasses import replace

import streamlit as st

from dashboard import figures, state

path = state.table_path()
flt = state.current_filter()
shape = state.selected_shape()
own = replace(flt, shape=None) if shape is not None and shape.space == "data_map" else flt  # its own selection
st.title("Data map")
colors = ["region", "split"] + (["ifd"] if state.overview(path)["with_ifd"] else [])  # IFD where there is one
c1, c2 = st.columns([3, 2])
color = c1.radio("Color by", colors, horizontal=True, key="map_color")
shade = c2.radio("Density colour", figures.DENSITY_COLORS, horizontal=True, key="map_shade")
cap = st.slider("Points drawn at most", 1_000, state.POINT_CAP_MAX, state.POINT_CAP, step=1_000, key="map_cap")
points, total = state.sample_points(path, own, cap, False)
if points.is_empty():
    st.info("No scored example matches the filter.")
else:
    marks = state.scale_marks(path)
    extent, layer, per_axis = state.map_figure_parts(path, own, "data_map", total, color, shade)
    st.caption(state.map_caption(total, points.height, cap, per_axis, "scored examples"))
    fig = figures.data_map(
        points,
        color=color,
        median=marks["median_log_ppl"],
        ambiguous_from=marks["ambiguous_from"],
        density=layer,
        extent=extent,
    )
    if shape is not None and shape.space == "data_map":
        figures.shape_outline(fig, shape)
    st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("box", "lasso"), key="map_plot")
    state.selection_note(path, own, "data_map")
    st.caption(
        "Regions (dataset cartography, computed over the whole table): **ambiguous** is the third of examples whose "
        "perplexity varies most across checkpoints relative to its mean (right of the dotted line); of the others, "
        "**easy-to-learn** are in the confident half (above the dashed median split) and **hard-to-learn** in the "
        "unconfident half: the reference never learned them (hard, or possibly mislabeled)."
    )
