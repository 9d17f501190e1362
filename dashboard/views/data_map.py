"""Data map: mean perplexity against relative variability over the checkpoints (the dataset-cartography view),
on scales where the bulk of examples spreads out, colored by cartography region, split or IFD."""

import streamlit as st

from dashboard import figures, state

path = state.table_path()
flt = state.current_filter()
st.title("Data map")
colors = ["region", "split"] + (["ifd"] if state.overview(path)["with_ifd"] else [])  # IFD where there is one
color = st.radio("Color by", colors, horizontal=True, key="map_color")
cap = st.slider("Points drawn at most", 1_000, 200_000, state.POINT_CAP, step=1_000, key="map_cap")
points, total = state.sample_points(path, flt, cap, False)
st.caption(
    f"Showing {points.height:,} of {total:,} scored examples matching the filter"
    + (f" (a random sample: cap {cap:,})" if total > points.height else "")
)
if points.is_empty():
    st.info("No scored example matches the filter.")
else:
    marks = state.scale_marks(path)
    fig = figures.data_map(points, color=color, median=marks["median_log_ppl"], ambiguous_from=marks["ambiguous_from"])
    st.plotly_chart(fig, width="stretch")
    st.caption(
        "Regions (dataset cartography, computed over the whole table): **ambiguous** is the third of examples whose "
        "perplexity varies most across checkpoints relative to its mean (right of the dotted line); of the others, "
        "**easy-to-learn** are in the confident half (above the dashed median split) and **hard-to-learn** in the "
        "unconfident half: the reference never learned them (hard, or possibly mislabeled)."
    )
