"""Data map: confidence against variability over the checkpoints (the dataset-cartography view)."""

import streamlit as st

from dashboard import figures, state

path = state.table_path()
flt = state.current_filter()
st.title("Data map")
cap = st.slider("Points drawn at most", 1_000, 200_000, state.POINT_CAP, step=1_000, key="map_cap")
points, total = state.sample_points(path, flt, cap, False)
st.caption(
    f"Showing {points.height:,} of {total:,} scored examples matching the filter"
    + (f" (a random sample: cap {cap:,})" if total > points.height else "")
)
if points.is_empty():
    st.info("No scored example matches the filter.")
else:
    fig = figures.scatter(
        points,
        x="variability",
        y="confidence",
        title="Confidence vs variability over checkpoints",
        x_title="variability (std of perplexity over checkpoints)",
        y_title="confidence (minus mean perplexity)",
    )
    st.plotly_chart(fig, width="stretch")
    st.caption(
        "High confidence, low variability: easy and learned early. Low confidence, high variability: the model "
        "was still learning them. Low confidence, low variability: hard or possibly mislabeled."
    )
