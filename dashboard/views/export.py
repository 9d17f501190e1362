"""Export: download the confident or unconfident split of the current filter, as JSONL or Parquet."""

import streamlit as st

from dashboard import queries, state

path = state.table_path()
flt = state.current_filter()
st.title("Export")
split = st.radio("Split", list(queries.SPLITS), horizontal=True, key="exp_split")
fmt = st.radio("Format", ["jsonl", "parquet"], horizontal=True, key="exp_fmt")
n = state.split_counts(path, flt)[split]  # the file itself is written when the download is asked for
st.write(f"{n:,} {split} examples match the filter.")
st.caption(
    "Each record is the original example's fields plus example_id, source, confidence, mean_nll, "
    "variability, split, quantile_bin and ifd (null where none); most confident first."
)
if n:
    st.download_button(
        f"Download {n:,} examples ({fmt})",
        data=state.export_data(path, flt, split, fmt),
        file_name=f"{split}.{fmt}",
        mime="application/jsonl" if fmt == "jsonl" else "application/vnd.apache.parquet",
        key="exp_download",
        on_click="ignore",
    )
