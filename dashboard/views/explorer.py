"""Explorer: the filtered examples (filters in the sidebar), sortable, and one example in full: its response token by
token (the NLL of each token at a checkpoint, or its change from the first to the last checkpoint), its messages and
its scores per checkpoint."""

import numpy as np
import streamlit as st

from dashboard import queries, state, tokens

TOKEN_SCORES_HINT = (
    "Profile or score with `--token-scores last` (each response token's NLL at the last checkpoint, the default of "
    "this version) or `--token-scores all` (at every checkpoint, which also shows what the reference learned)."
)


ROW_HEIGHT = 78  # pixels: text wraps over about four lines (Streamlit wraps text in rows taller than 4rem)
TABLE_HEIGHT = 560  # pixels at most: the header and about six rows (a short page is shorter)
HEADER_HEIGHT = 52  # pixels: the header row and a horizontal scroll bar


def _fmt(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def token_view(path: str, example_id: str, status: str, mark: str, scored: bool = True) -> None:
    """The response shaded token by token; a hint where the profile or the example has no token scores. An example
    with token scores but no confidence yet (``scored`` false: a profile still scoring) says so first."""
    if state.token_checkpoints(path).is_empty():
        st.info("This profile has no token scores. " + TOKEN_SCORES_HINT)
        return
    data = state.example_tokens(path, example_id)
    if data is None:
        st.info(f"No token scores for this example (status: {status}).")
        return
    toks, nll, first, last = data["tokens"], data["nll"], data["first"], data["last"]
    if any(len(v) != len(toks) for v in nll.values()):  # the table's contract says this cannot happen
        st.warning(f"This example's token texts ({len(toks)}) do not match its token scores: not shown.")
        return
    cps = data["checkpoints"]
    ids = cps["checkpoint_id"].to_list()
    labels = {r["checkpoint_id"]: queries.checkpoint_label(**r) for r in cps.iter_rows(named=True)}
    if not scored:
        have = ", ".join(f"checkpoint {queries.checkpoint_number(c)}" for c in ids)
        st.caption(
            "This example's confidence, split and rank are not written yet (they come when the profile's scoring "
            f"ends); its token NLLs at {have} are: shaded below."
        )
    can_change = first != last and first in nll and last in nll
    modes = ["NLL at a checkpoint"] + (["What the reference learned (last − first checkpoint)"] if can_change else [])
    # A choice is offered only where there is one: the shading (with token scores at the first and last checkpoint)
    # and the checkpoint (with token scores at more than one).
    c1, c2 = st.columns([3, 2]) if len(modes) > 1 else (None, st)
    mode = c1.radio("Shade tokens by", modes, horizontal=True, key="tok_mode") if len(modes) > 1 else modes[0]
    if mode == modes[0]:
        if len(ids) > 1:
            cid = c2.selectbox("Checkpoint", ids, index=len(ids) - 1, format_func=labels.get, key="tok_ckpt")
        else:
            cid = ids[0]
            st.caption(
                f"Shaded by each token's NLL at {labels[cid]}, the only checkpoint with token scores. What the "
                "reference learned (the change from the first to the last checkpoint) needs token scores at both: "
                "score with `--token-scores all`."
            )
        # One colour scale for all of the example's checkpoints, so switching checkpoints compares like with like.
        vmax = tokens.robust_max(np.concatenate([np.asarray(v, dtype=np.float64) for v in nll.values()]))
        st.html(tokens.nll_html(toks, nll[cid], vmax=vmax, mark=mark))
        values = np.asarray(nll[cid], dtype=np.float64)
        st.caption(
            f"{len(toks):,} scored response tokens · mean NLL {values.mean():.3f} at {labels[cid]}"
            + (
                ""
                if can_change or len(ids) == 1
                else " · the change from the first to the last checkpoint needs token scores at "
                "both: score with `--token-scores all`"
            )
        )
    else:
        st.html(tokens.change_html(toks, nll[first], nll[last], mark=mark))
        delta = tokens.token_change(nll[first], nll[last])
        st.caption(
            f"{len(toks):,} scored response tokens · NLL change from checkpoint {queries.checkpoint_number(first)} "
            f"to {queries.checkpoint_number(last)}: mean {delta.mean():+.3f} · {int((delta < 0).sum()):,} tokens "
            f"fell (learned), {int((delta > 0).sum()):,} rose"
        )
    if mark:
        st.caption("Outlined: the tokens of the token filter (in the sidebar).")


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
if rows["ifd"].null_count() == rows.height:
    rows = rows.drop("ifd")  # a profile without IFD (older, or --no-ifd)
shown, texted = state.dashed(rows)
order, config = state.table_columns(rows.columns, sort, texted)
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    height=min(TABLE_HEIGHT, HEADER_HEIGHT + ROW_HEIGHT * max(rows.height, 1)),
    row_height=ROW_HEIGHT,
    column_order=order,
    column_config=config,
)
hidden = [c for c in order if config[c]["hidden"]]
st.caption(
    "Click a cell to read it whole; pick an example below to see it in full."
    + (f" The table's toolbar (its eye) shows the other columns: {', '.join(hidden)}." if hidden else "")
)
if rows.height:
    labels = {r["example_id"]: f"{r['example_id'][:16]} · {r['prompt'][:70]}" for r in rows.iter_rows(named=True)}
    chosen = st.selectbox("Example", list(labels), format_func=labels.get, key="ex_pick")
    detail = queries.example_detail(state.cursor(path), chosen)
    st.subheader(f"Example {chosen}")
    meta_cols = st.columns([1.5, 1.2, 1, 0.8, 0.8])  # room for 'unconfident'
    meta_cols[0].metric("Split", detail["split"])
    meta_cols[1].metric("Confidence", _fmt(detail["confidence"]))
    meta_cols[2].metric("Variability", _fmt(detail["variability"]))
    meta_cols[3].metric("Rank", _fmt(detail["rank"], ","))
    meta_cols[4].metric("IFD", _fmt(detail["ifd"], ".3f"))
    st.caption(f"{detail['source_file']}, row {detail['file_row']} · status {detail['status']}")
    if detail["status_detail"]:
        st.warning(detail["status_detail"])
    tab_tokens, tab_messages, tab_scores = st.tabs(["Response tokens", "Messages", "Scores per checkpoint"])
    with tab_tokens:
        token_view(path, chosen, detail["status"], flt.token, scored=detail["confidence"] is not None)
    with tab_messages:
        for m in detail["messages"] or []:
            role = m["role"]
            with st.chat_message("user" if role == "user" else "assistant" if role == "assistant" else "ai"):
                st.text(m["content"])
    with tab_scores:
        st.dataframe(queries.numbered_checkpoints(detail["scores"]), hide_index=True)
