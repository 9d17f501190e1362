"""Overview: counts, split sizes, regions, statuses, the histogram of mean perplexity (log scale) with the median
split and the quantile bins, the split per source."""

import streamlit as st

from dashboard import figures, queries, state

path = state.table_path()
ov = state.overview(path)
st.title("Overview")
st.caption(f"Reference model: {ov['reference_model']} · profiled {ov['created_at']} · whole table (no filter)")
cols = st.columns(5)
cols[0].metric("Examples", f"{ov['examples']:,}")
cols[1].metric("Scored", f"{ov['scored']:,}")
cols[2].metric("Confident", f"{ov['confident']:,}")
cols[3].metric("Unconfident", f"{ov['unconfident']:,}")
cols[4].metric("Checkpoints", ov["checkpoints"])
if ov["median_confidence"] is None:
    st.info("No confidence yet: the profile has not finished scoring.")
else:
    marks = state.scale_marks(path)
    st.plotly_chart(
        figures.confidence_histogram(state.histogram(path, 60), marks["median_log_ppl"], marks["bin_edges"]),
        width="stretch",
    )
    st.caption(
        f"Median split at mean perplexity {10 ** marks['median_log_ppl']:.4g}. Regions (dataset cartography): "
        + ", ".join(f"{name} {n:,}" for name, n in ov["regions"].items())
        + ". See the data map."
    )
breakdown = state.source_breakdown(path)
scored = ov["median_confidence"] is not None
if not scored:  # nothing is split yet: no split sizes, shares or medians to show (they would read 0% and None)
    breakdown = breakdown.select("source", "examples", "scored")
else:  # a source none of whose examples is scored has no median: "-", not "None"
    breakdown = breakdown.with_columns(
        breakdown["median_confidence"].map_elements(lambda v: format(v, ".4g"), return_dtype=str).fill_null("-")
    )
# The sources table gets the page's width (in half of it, its last columns were cut off), the status table beside
# the split-by-source bars (once there is a split).
st.subheader("Sources")
st.dataframe(
    breakdown,
    hide_index=True,
    width="stretch",
    column_config={
        "source": st.column_config.TextColumn("source"),
        "share_confident": st.column_config.NumberColumn(
            "share confident", format="percent", help="confident / scored examples"
        ),
        "median_confidence": st.column_config.TextColumn(
            "median confidence",
            help="minus the median of the examples' mean perplexity ('-': none scored)",
            alignment="right",
        ),
    },
)
if not scored:
    st.caption("The split per source comes with the confidence, when the profile has finished scoring.")
left, right = st.columns([1, 2]) if breakdown.height > 1 and scored else (st.container(), None)
with left:
    st.subheader("Status")
    st.dataframe(state.status_counts(path), hide_index=True, width="stretch")
if right is not None:
    with right:
        st.plotly_chart(figures.source_bars(breakdown), width="stretch")
times = queries.stage_times(state.progress(path))
if times:
    st.caption(times)
