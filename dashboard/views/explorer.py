"""Explorer: the filtered examples (filters in the sidebar), sortable, and one example in full."""

import streamlit as st

from dashboard import queries, state

path = state.table_path()
flt = state.current_filter()
st.title("Explorer")
c1, c2, c3 = st.columns([2, 1, 1])
sort = c1.selectbox("Sort by", list(queries.SORTABLE), key="ex_sort")
descending = c2.toggle("Descending", key="ex_desc")
page_size = c3.selectbox("Rows per page", [25, 100, 500], index=1, key="ex_size")
total = state.count(path, flt)
n_pages = max(1, -(-total // page_size))
page_no = st.number_input("Page", 1, n_pages, 1, key="ex_page") if n_pages > 1 else 1
rows, _ = state.explore(path, flt, sort, descending, page_size, (page_no - 1) * page_size)
st.caption(f"{total:,} examples match the filter · page {page_no} of {n_pages}")
st.dataframe(rows, hide_index=True, width="stretch")
if rows.height:
    labels = {r["example_id"]: f"{r['example_id'][:16]} · {r['prompt'][:70]}" for r in rows.iter_rows(named=True)}
    chosen = st.selectbox("Example", list(labels), format_func=labels.get, key="ex_pick")
    detail = queries.example_detail(state.cursor(path), chosen)
    st.subheader(f"Example {chosen}")
    meta_cols = st.columns(4)
    meta_cols[0].metric("Split", detail["split"])
    meta_cols[1].metric("Confidence", "-" if detail["confidence"] is None else f"{detail['confidence']:.4g}")
    meta_cols[2].metric("Variability", "-" if detail["variability"] is None else f"{detail['variability']:.4g}")
    meta_cols[3].metric("Rank", "-" if detail["rank"] is None else f"{detail['rank']:,}")
    st.caption(f"{detail['source_file']}, row {detail['file_row']} · status {detail['status']}")
    if detail["status_detail"]:
        st.warning(detail["status_detail"])
    for m in detail["messages"] or []:
        with st.chat_message("user" if m["role"] == "user" else "assistant" if m["role"] == "assistant" else "ai"):
            st.text(m["content"])
    st.dataframe(detail["scores"], hide_index=True)
