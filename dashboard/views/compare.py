"""Compare: two profiles of the same data (a weak and a strong reference, say). The scatter is on log10 mean
perplexity, as the data map: every common example in the density layer, a sample of points on top; a box or lasso
there selects every common example inside it (in SQL), and the other pages then show only them."""

from dataclasses import replace

import streamlit as st

from dashboard import figures, queries, state
from profiler.errors import TableError

a, b = state.table_path(), state.compare_path()
st.title("Compare two profiles")
try:
    cmp = state.comparison(a, b)
except TableError as e:  # a profile not scored yet, say, or two of different data
    st.info(str(e))
    st.stop()
name_a, name_b = queries.table_labels(a, b)
st.caption(f"A = {a} · B = {b}" + ("" if cmp.same_data else " · the datasets differ: common examples only"))
cols = st.columns(4)
cols[0].metric("Common examples", f"{cmp.n_common:,}")
cols[1].metric("Spearman", f"{cmp.spearman:.3f}")
cols[2].metric("Kendall tau-b", f"{cmp.kendall:.3f}")
cols[3].metric("Split agreement", f"{cmp.agreement_rate:.1%}")
cap = state.POINT_CAP
joined = state.compare_points(a, b, cap)
per_axis = queries.GRID // state.density_step(cmp.n_common)
cells, extent = state.compare_density(a, b, per_axis)
layer = figures.density_layer(cells, extent, per_axis)
st.caption(
    f"Density: all {cmp.n_common:,} common examples, counted in {per_axis}×{per_axis} cells · points: "
    f"{joined.height:,} drawn on top" + (f" (a random sample: cap {cap:,})" if cmp.n_common > cap else "")
)
# A box or lasso selects among every common example, in SQL (the sidebar makes their places, once, when one is drawn).
fig = figures.compare_scatter(joined, name_a, name_b, density=layer, extent=extent)
shape = state.selected_shape()
if shape is not None and shape.space == "compare":
    figures.shape_outline(fig, shape)
st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("box", "lasso"), key="cmp_plot")
if shape is not None and shape.space == "compare":  # the compare page itself is not filtered by other maps
    state.selection_note(a, replace(state.current_filter(), shape=None), "compare")
st.plotly_chart(figures.agreement_heatmap(cmp.agreement, name_a, name_b), width="stretch")
st.subheader(f"{cmp.flips.height:,} examples change split (largest rank change first)")
st.dataframe(cmp.flips.head(500), hide_index=True, width="stretch")
