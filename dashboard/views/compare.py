"""Compare: two profiles of the same data (a weak and a strong reference, say)."""

from pathlib import Path

import streamlit as st

from dashboard import figures, state

a, b = state.table_path(), state.compare_path()
st.title("Compare two profiles")
cmp = state.comparison(a, b)
name_a, name_b = Path(a).name, Path(b).name
st.caption(f"A = {a} · B = {b}" + ("" if cmp.same_data else " · the datasets differ: common examples only"))
cols = st.columns(4)
cols[0].metric("Common examples", f"{cmp.n_common:,}")
cols[1].metric("Spearman", f"{cmp.spearman:.3f}")
cols[2].metric("Kendall tau-b", f"{cmp.kendall:.3f}")
cols[3].metric("Split agreement", f"{cmp.agreement_rate:.1%}")
cap = state.POINT_CAP
joined = cmp.joined if cmp.n_common <= cap else cmp.joined.sample(cap, seed=0)
if cmp.n_common > cap:
    st.caption(f"Scatter shows a random {cap:,} of {cmp.n_common:,} examples")
st.plotly_chart(figures.compare_scatter(joined, name_a, name_b), width="stretch")
st.plotly_chart(figures.agreement_heatmap(cmp.agreement, name_a, name_b), width="stretch")
st.subheader(f"{cmp.flips.height:,} examples change split (largest rank change first)")
st.dataframe(cmp.flips.head(500), hide_index=True, width="stretch")
