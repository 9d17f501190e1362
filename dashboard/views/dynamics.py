"""Training dynamics: per-example perplexity across checkpoints, and per confidence bin."""

import streamlit as st

from dashboard import figures, state

path = state.table_path()
flt = state.current_filter()
st.title("Training dynamics")
deciles = state.decile_trajectories(path)
if deciles.is_empty():
    st.info("No scores yet.")
    st.stop()
st.plotly_chart(figures.decile_lines(deciles), width="stretch")
n = st.slider("Examples to trace (a sample of the filter)", 1, 200, 30, key="dyn_n")
points, total = state.sample_points(path, flt, n, False)
chosen = st.text_input("Or trace these example ids (comma-separated)", key="dyn_ids")
ids = tuple(i.strip() for i in chosen.split(",") if i.strip()) or tuple(points["example_id"].to_list())
traj = state.trajectories(path, ids)
if traj.is_empty():
    st.info("No scores for these examples.")
else:
    st.caption(f"{traj['example_id'].n_unique():,} examples traced ({total:,} match the filter)")
    st.plotly_chart(figures.trajectory_lines(traj), width="stretch")
