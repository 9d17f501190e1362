"""Hard tokens: the tokens with the highest mean NLL across the filtered examples, at the last checkpoint with token
scores (aggregated in DuckDB); choosing one filters the explorer to the examples that hold it."""

from dataclasses import replace

import streamlit as st

from dashboard import figures, queries, state

path = state.table_path()
flt = replace(state.current_filter(), token="")  # the list is over the filter, not over its own choice
st.title("Hard tokens")
if state.token_checkpoints(path).is_empty():
    st.info(
        "This profile has no token scores. Profile or score with `--token-scores last` (each response token's NLL "
        "at the last checkpoint, the default of this version) or `--token-scores all`."
    )
    st.stop()
c1, c2 = st.columns(2)
min_count = c1.number_input(
    "Seen at least (times)", 1, 1_000_000, 5, key="ht_min", help="A rare token's mean NLL is noise."
)
limit = c2.number_input("Tokens listed", 5, 1_000, 50, step=5, key="ht_n")
matching = state.count(path, flt)
every = False
if flt.where()[0] != "TRUE" and matching > queries.TOKEN_SAMPLE:  # the whole table's totals are kept: exact
    every = st.toggle(
        f"Count all {matching:,} matching examples",
        key="ht_every",
        help=f"Off: the tokens of a fixed random sample of {queries.TOKEN_SAMPLE:,} of them (tens of milliseconds). "
        "On: every one (about a second per million examples counted).",
    )
table, info = state.hard_tokens(path, flt, int(min_count), int(limit), every)
checkpoint = queries.checkpoint_label(info["checkpoint_id"], info["step"])
sampled = info.get("sampled")
# Where only some of the filtered examples have token scores (a profile still scoring, say), both counts.
if sampled:
    whose = (
        f"a fixed random sample of {sampled:,} of the {matching:,} examples that match the filter "
        f"({info['examples']:,} with token scores); counts are the sample's"
    )
elif info["examples"] >= matching:
    whose = f"the {info['examples']:,} examples that match the filter"
else:
    whose = f"the {info['examples']:,} examples with token scores among the {matching:,} that match the filter"
st.caption(
    f"Mean NLL of each token at {checkpoint} (the last with token scores), over {info['tokens']:,} response "
    f"tokens of {whose} · {info['kept']:,} of {info['distinct']:,} distinct tokens seen at least "
    f"{int(min_count):,} times."
)
st.caption(
    "Tokens are grouped by their text with the surrounding whitespace trimmed (a token of whitespace alone shows "
    "as ↵ newline, ⇥ tab, ␣ space). Bars: the hardest 25, with how often each occurs."
)
if table.is_empty():
    st.info("No token is seen that often in the filtered examples: lower the minimum count or widen the filter.")
    st.stop()
shown = table.with_columns(table["token"].map_elements(queries.visible_token, return_dtype=str).alias("token"))
st.plotly_chart(figures.hard_token_bars(shown.head(25)), width="stretch")
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    column_config={
        "mean_nll": st.column_config.NumberColumn("mean NLL", format="%.3f"),
        "count": st.column_config.NumberColumn("count", help="occurrences in the filtered examples"),
        "examples": st.column_config.NumberColumn("examples", help="filtered examples holding it"),
        "share_nll": st.column_config.NumberColumn("share of NLL", format="percent", help="of all the NLL counted"),
    },
)
keys = table["token"].to_list()
rows = {k: r for k, r in zip(keys, table.iter_rows(named=True))}
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
pick = c1.selectbox(
    "Show the examples that hold a token",
    keys,
    format_func=lambda k: (
        f"{queries.visible_token(k)}  ·  mean NLL {rows[k]['mean_nll']:.3f}, "
        f"{rows[k]['count']:,} times in {rows[k]['examples']:,} examples"
    ),
    key="ht_pick",
)
if c2.button("Filter the explorer", key="ht_go", type="primary"):
    st.session_state[state.TOKEN_KEY] = pick
    st.switch_page("views/explorer.py")
if state.chosen_token():
    st.caption("The explorer shows only the examples holding the token in the sidebar (clear it there).")
