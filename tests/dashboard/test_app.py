"""Every page of the Streamlit app, run headless with streamlit.testing on a real profile."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from benchmarks.synthetic import write_synthetic_profile
from dashboard import COMPARE_ENV, TABLE_ENV, queries
from dashboard.queries import token_key
from tests.conftest import N_BAD, N_CHAT, N_FAQ
from tests.dashboard.conftest import LONG_ID, N_INJECT, N_TOKEN_SCORED, N_UNFINISHED, SCRIPT
from tests.dashboard.test_readable import MIN_COLOUR_GAP, colour_gaps, lab
from tests.dashboard.test_tokens import (
    TITLE_CHANGE,
    check_token_html,
    direct_hard_tokens,
    direct_tokens,
    expected_ranking,
    inject_id,
    parse_token_html,
)

APP = str(Path(__file__).parents[2] / "dashboard" / "app.py")
N_OK = N_FAQ + N_CHAT


def app(monkeypatch, table, compare=None) -> AppTest:
    monkeypatch.setenv(TABLE_ENV, str(table))
    if compare:
        monkeypatch.setenv(COMPARE_ENV, str(compare))
    else:
        monkeypatch.delenv(COMPARE_ENV, raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def numbers(column) -> list[float]:
    """A column of the explorer's table as numbers, its missing values left out (a page with one shows its numbers
    as text, "-" where missing)."""
    return [float(v) for v in column if v is not None and v == v and v != "-"]


def test_overview(monkeypatch, small_profile):
    at = app(monkeypatch, small_profile)
    assert at.title[0].value == "Overview"
    assert metrics(at) == {
        "Examples": str(N_OK + N_BAD),
        "Scored": str(N_OK),
        "Confident": str(N_OK // 2),
        "Unconfident": str(N_OK - N_OK // 2),
        "Checkpoints": "3",
    }
    sources, status = at.dataframe[0].value, at.dataframe[1].value
    assert dict(zip(status["status"], status["examples"])) == {"ok": N_OK, "empty_field": N_BAD}
    assert sorted(sources["source"]) == ["chat", "faq"]
    assert "Stage times" in captions(at)
    assert "Median split at mean perplexity" in captions(at) and "ambiguous 10" in captions(at)
    hist = at.get("plotly_chart")[0].proto.spec
    assert "log10 mean perplexity" in hist


def test_the_sources_table_has_the_page_width(monkeypatch, small_profile):
    """In half of the page the sources table's last columns were cut off: it has the page's width (outside any
    st.columns), readable labels and formats."""
    at = app(monkeypatch, small_profile)
    assert at.subheader[0].value == "Sources"
    in_columns = [d for c in at.columns for d in c.dataframe]
    assert not any("share_confident" in d.value.columns for d in in_columns)
    sources = next(d for d in at.dataframe if "share_confident" in d.value.columns)
    config = json.loads(sources.proto.columns)
    assert config["share_confident"]["label"] == "share confident"
    assert config["share_confident"]["type_config"]["format"] == "percent"
    assert config["median_confidence"]["label"] == "median confidence"


@pytest.mark.parametrize("url_path", ["home", "overview"])
def test_the_home_and_overview_urls_open_the_overview(monkeypatch, small_profile, url_path):
    """The default page is served at "/" (its URL path is ""); /home and /overview send the browser there (not
    "Page not found"). A session opened at /home asks for the page whose URL path is "home"."""
    at = app(monkeypatch, small_profile)
    goto(at, "explorer")
    at._page_hash = next(h for h, info in at._registered_pages.items() if info.get("url_pathname") == url_path)
    at.run()
    assert not at.exception and at.title[0].value == "Overview"


def test_data_map_and_semantic_map(monkeypatch, small_profile):
    at = goto(app(monkeypatch, small_profile), "data_map")
    assert at.title[0].value == "Data map"
    assert f"Density: all {N_OK} scored examples matching the filter" in captions(at)
    assert f"points: {N_OK} drawn on top, for hover" in captions(at)
    at.slider(key="map_cap").set_value(1000).run()
    assert not at.exception
    at.radio(key="map_color").set_value("split").run()
    assert not at.exception
    at.sidebar.multiselect(key="f_regions").set_value(["ambiguous"]).run()
    assert f"Density: all {N_OK // 3} scored examples" in captions(at)
    at.sidebar.multiselect(key="f_regions").set_value([]).run()
    goto(at, "semantic_map")
    assert at.title[0].value == "Semantic map"
    assert f"UMAP of mean-pooled final hidden states · Density: all {N_OK} embedded examples" in captions(at)
    for color in ("region", "confidence"):
        at.radio(key="sem_color").set_value(color).run()
        assert not at.exception
    # Coloured by source (one trace each, which together hold every point), on axes named after the projection.
    assert at.radio(key="sem_color").options == ["split", "region", "source", "confidence", "ifd"]
    at.radio(key="sem_color").set_value("source").run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][0]["type"] == "heatmap"  # the density of every example, under the points
    traces = {t["name"]: [c[1] for c in t["customdata"]] for t in spec["data"][1:]}
    assert {name: set(srcs) for name, srcs in traces.items()} == {"chat": {"chat"}, "faq": {"faq"}}
    assert {name: len(srcs) for name, srcs in traces.items()} == {"chat": N_CHAT, "faq": N_FAQ}
    assert len({t["marker"]["color"] for t in spec["data"][1:]}) == 2
    layout = spec["layout"]
    assert (layout["xaxis"]["title"]["text"], layout["yaxis"]["title"]["text"]) == ("UMAP 1", "UMAP 2")
    # The sidebar filter narrows the maps.
    at.sidebar.multiselect(key="f_sources").set_value(["chat"]).run()
    assert f"Density: all {N_CHAT} embedded examples" in captions(at)


def test_map_selection_filters_the_explorer(monkeypatch, small_profile):
    at = app(monkeypatch, small_profile)
    con = duckdb.connect(str(small_profile), read_only=True)
    picked = tuple(r[0] for r in con.execute("SELECT example_id FROM confidence ORDER BY rank LIMIT 5").fetchall())
    con.close()
    at.session_state["selected_ids"] = picked  # what a lasso on the semantic map stores
    goto(at, "explorer")
    assert "5 examples match the filter" in captions(at)
    assert set(at.dataframe[0].value["example_id"]) == set(picked)
    assert "5 examples selected on the semantic map" in "\n".join(c.value for c in at.sidebar.caption)
    at.sidebar.button[0].click().run()  # clear the selection
    assert f"{N_OK + N_BAD} examples match the filter" in captions(at)


def test_dynamics(monkeypatch, small_profile):
    at = goto(app(monkeypatch, small_profile), "dynamics")
    assert at.title[0].value == "Training dynamics"
    assert "30 examples traced" in captions(at)
    at.slider(key="dyn_n").set_value(5).run()
    assert "5 examples traced" in captions(at)


def test_dynamics_bins_have_colours_that_neighbours_can_tell_apart(monkeypatch, small_profile):
    """The quantile bins' lines: each colour well apart from its neighbours' (CIE76 Delta E at least 20; one
    red-to-blue gradient put neighbours 6 to 16 apart), red for the least confident bin and blue for the most,
    listed from the least to the most confident."""
    at = goto(app(monkeypatch, small_profile), "dynamics")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    lines = spec["data"]
    gaps = colour_gaps([t["line"]["color"] for t in lines])
    assert min(gaps) >= MIN_COLOUR_GAP, gaps
    assert lab(lines[0]["line"]["color"])[1] > 20 and lab(lines[-1]["line"]["color"])[2] < -20  # red; blue
    assert [t["name"].split(" · ")[0] for t in lines] == [f"bin {b}" for b in range(10)]
    assert lines[0]["name"] == "bin 0 · least confident" and lines[-1]["name"] == "bin 9 · most confident"
    assert spec["layout"]["xaxis"]["title"]["text"] == "fraction of the epoch"
    # The traced examples' hover names their checkpoints 1-based, as the CLI counts them.
    traced = json.loads(at.get("plotly_chart")[1].proto.spec)["data"][0]
    assert traced["text"] == ["checkpoint 1 (step 5)", "checkpoint 2 (step 10)", "checkpoint 3 (step 15)"]


def test_explorer_filters_sort_detail_and_sql_search(monkeypatch, small_profile):
    at = goto(app(monkeypatch, small_profile), "explorer")
    assert f"{N_OK + N_BAD} examples match the filter" in captions(at)
    table = at.dataframe[0].value
    # Sorted by rank, unscored last; the page holds an unscored row, so its numbers read "-" there, not "None".
    assert list(table["rank"][: N_OK + 1]) == [str(r) for r in range(N_OK)] + ["-"]
    assert metrics(at)["Split"] == "confident" and metrics(at)["Rank"] == "0"
    at.selectbox(key="ex_sort").set_value("confidence").run()
    at.toggle(key="ex_desc").set_value(True).run()
    conf = numbers(at.dataframe[0].value["confidence"])
    assert conf == sorted(conf, reverse=True)
    at.sidebar.multiselect(key="f_splits").set_value(["unscored"]).run()
    assert f"{N_BAD} examples match the filter" in captions(at)
    assert any("empty" in w.value for w in at.warning)  # the bad row's reason, with file and row
    at.sidebar.multiselect(key="f_splits").set_value([]).run()
    # SQL-looking search text is matched literally; nothing breaks and nothing leaks.
    at.sidebar.text_input(key="f_search").input("'; DROP TABLE examples; --").run()
    assert not at.exception
    assert "1 examples match the filter" in captions(at)
    at.sidebar.text_input(key="f_search").input("' OR '1'='1").run()
    assert not at.exception and "0 examples match the filter" in captions(at)
    at.sidebar.text_input(key="f_search").input("").run()
    assert f"{N_OK + N_BAD} examples match the filter" in captions(at)  # the table is intact


def test_explorer_table_wraps_the_prompt_and_response_and_numbers_checkpoints_from_1(monkeypatch, small_profile):
    """The prompt and the response come right after the id, the sort key, split and source, in the widest columns,
    whose text wraps over a few lines (Streamlit wraps text in rows taller than 4rem = 64px); the scores per
    checkpoint count from 1."""
    at = goto(app(monkeypatch, small_profile), "explorer")
    table = at.dataframe[0]
    assert table.proto.row_height > 64
    assert list(table.proto.column_order)[:6] == ["example_id", "rank", "split", "source", "prompt", "response"]
    config = json.loads(table.proto.columns)
    # The widest columns (the table fits the page: test_explorer_table_fits_the_page).
    others = [config[c]["width"] for c in table.proto.column_order if c not in ("prompt", "response")]
    assert min(config["prompt"]["width"], config["response"]["width"]) > max(others)
    at.selectbox(key="ex_sort").set_value("ifd").run()
    assert list(at.dataframe[0].proto.column_order)[:3] == ["example_id", "ifd", "split"]
    scores = at.dataframe[1].value  # the scores per checkpoint, 1-based as the CLI counts them
    assert list(scores.columns)[0] == "checkpoint" and list(scores["checkpoint"]) == [1, 2, 3]


def test_explorer_table_marks_cut_text(monkeypatch, long_profile):
    at = goto(app(monkeypatch, long_profile), "explorer")
    rows = at.dataframe[0].value.set_index("example_id")
    long = rows.loc[LONG_ID, "response"]
    assert long.endswith("…") and len(long) == queries.EXPLORE_CHARS
    assert not any(r.endswith("…") for r in rows["prompt"])  # short ones whole


def test_token_view_offers_no_choice_with_token_scores_at_one_checkpoint(monkeypatch, small_profile):
    """Token scores at the last checkpoint only (--token-scores last): no one-option "Shade tokens by" radio and no
    one-option checkpoint box, a caption saying what the shading is."""
    at = goto(app(monkeypatch, small_profile), "explorer")
    assert len(at.html) == 1
    assert "tok_mode" not in [r.key for r in at.radio] and "tok_ckpt" not in [s.key for s in at.selectbox]
    assert "Shaded by each token's NLL at checkpoint 3 · step 15 · 100% of the epoch, the only checkpoint" in (
        captions(at)
    )
    assert "--token-scores all" in captions(at)


def test_perplexity_slider_filters_on_the_log_scale(monkeypatch, small_profile):
    at = goto(app(monkeypatch, small_profile), "explorer")
    slider = at.sidebar.slider(key="f_conf")
    lo, hi = slider.min, slider.max
    con = duckdb.connect(str(small_profile), read_only=True)
    log_ppl = sorted(r[0] for r in con.execute("SELECT log10(-confidence) FROM confidence").fetchall())
    con.close()
    assert lo <= log_ppl[0] and log_ppl[-1] <= hi and hi - lo < 10  # log10 perplexity, not minus perplexity
    cut = round((log_ppl[14] + log_ppl[15]) / 2, 2)  # between the 15th and 16th lowest perplexity
    expected = sum(v <= cut for v in log_ppl)
    slider.set_value((lo, cut)).run()
    assert f"{expected} examples match the filter" in captions(at)  # the unscored row drops out too
    assert "mean perplexity" in "\n".join(c.value for c in at.sidebar.caption)


def test_export(monkeypatch, small_profile):
    at = goto(app(monkeypatch, small_profile), "export")
    assert f"{N_OK // 2} confident examples match the filter." in [m.value for m in at.markdown]
    at.sidebar.multiselect(key="f_sources").set_value(["chat"]).run()
    at.radio(key="exp_split").set_value("unconfident").run()
    at.radio(key="exp_fmt").set_value("parquet").run()
    assert not at.exception
    text = [m.value for m in at.markdown if "unconfident examples match" in m.value][0]
    assert 0 < int(text.split()[0]) < N_CHAT


def test_compare_page(monkeypatch, small_profile, other_profile):
    at = goto(app(monkeypatch, small_profile, other_profile), "compare")
    m = metrics(at)
    assert m["Common examples"] == str(N_OK)
    assert -1.0 <= float(m["Spearman"]) <= 1.0 and m["Split agreement"].endswith("%")
    assert "examples change split" in at.subheader[0].value
    # The scatter: log10 mean perplexity under each reference, over the density; both tables named by folder and file.
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][0]["type"] == "heatmap" and "Density: all" in captions(at)
    name_a, name_b = queries.table_labels(str(small_profile), str(other_profile))
    assert name_a != name_b and name_a.endswith(f"{small_profile.parent.name}/{small_profile.name}")
    assert spec["layout"]["xaxis"]["title"]["text"] == f"A: {name_a}, log10 mean perplexity"
    points = [t for t in spec["data"] if t["type"] == "scattergl"]
    xs = [v for t in points for v in t["x"]]
    con = duckdb.connect(str(small_profile), read_only=True)
    logs = sorted(math.log10(-c) for (c,) in con.execute("SELECT confidence FROM confidence").fetchall())
    con.close()
    assert sorted(xs) == pytest.approx(logs)


def test_a_200k_profile_draws_every_example_in_the_density(monkeypatch, tmp_path):
    """What the pages show at a scale that needs the density layer. How fast is the benchmarks' job
    (bench_dashboard.py, bench_first_page.py print ratios): a time bound here fails at random on a loaded machine."""
    big = write_synthetic_profile(tmp_path / "big.duckdb", 200_000)
    import dashboard.figures  # noqa: F401  (imports warm, as in a served app after its first page)

    t0 = time.perf_counter()
    at = app(monkeypatch, big)
    elapsed = time.perf_counter() - t0
    assert metrics(at)["Examples"] == "200,000"
    t0 = time.perf_counter()
    goto(at, "semantic_map")
    assert "Density: all 199,799 embedded examples" in captions(at)  # every example in the density
    assert "points: 5,000 drawn on top (a random sample: cap 5,000)" in captions(at)  # the cap, shown
    print(f"200k profile: overview {elapsed:.2f}s, semantic map {time.perf_counter() - t0:.2f}s")


def test_no_table_gives_a_clear_message(monkeypatch):
    monkeypatch.delenv(TABLE_ENV, raising=False)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert "sftmix dashboard run.duckdb" in at.error[0].value


# --- token scores and IFD (schema 1.1) ----------------------------------------------------------------------------
def test_explorer_token_view_shows_escaped_tokens_their_nll_and_the_change(monkeypatch, token_profile):
    at = goto(app(monkeypatch, token_profile), "explorer")
    at.sidebar.text_input(key="f_search").input("pwned").run()
    assert "1 examples match the filter" in captions(at)
    eid = inject_id(token_profile)
    toks, nll = direct_tokens(token_profile, eid)
    assert at.selectbox(key="ex_pick").value == eid
    # Default: the NLL at the last checkpoint; every token escaped, in order, its NLL in its title.
    assert len(at.html) == 1
    check_token_html(at.html[0].value, toks, nll[2])
    assert f"{len(toks)} scored response tokens · mean NLL {nll[2].astype(float).mean():.3f} at checkpoint 3 · " in (
        captions(at)
    )
    assert any(SCRIPT in t.value for t in at.text)  # the messages tab shows it as text too
    # Checkpoints are numbered from 1 (the stored checkpoint_id, the box's value, from 0).
    ckpt = at.selectbox(key="tok_ckpt")
    assert [o.split(" · ")[0] for o in ckpt.options] == ["checkpoint 1", "checkpoint 2", "checkpoint 3"]
    ckpt.set_value(0).run()
    check_token_html(at.html[0].value, toks, nll[0])
    # What the reference learned: last minus first.
    modes = at.radio(key="tok_mode").options
    assert modes == ["NLL at a checkpoint", "What the reference learned (last − first checkpoint)"]
    at.radio(key="tok_mode").set_value(modes[1]).run()
    assert not at.exception
    spans = parse_token_html(at.html[0].value).spans
    assert [s["text"] for s in spans] == toks
    delta = [float(TITLE_CHANGE.match(s["title"])["d"]) for s in spans]
    assert np.allclose(delta, nll[2].astype(float) - nll[0].astype(float), atol=5e-4)
    expected = nll[2].astype(float) - nll[0].astype(float)
    assert "NLL change from checkpoint 1 to 3" in captions(at)
    assert f"mean {expected.mean():+.3f} · {int((expected < 0).sum())} tokens fell (learned)" in captions(at)
    # IFD, as a metric and a column.
    con = duckdb.connect(str(token_profile), read_only=True)
    ifd = dict(con.execute("SELECT example_id, ifd FROM ifd").fetchall())
    con.close()
    assert metrics(at)["IFD"] == f"{ifd[eid]:.3f}"
    at.sidebar.text_input(key="f_search").input("").run()
    at.selectbox(key="ex_sort").set_value("ifd").run()
    at.toggle(key="ex_desc").set_value(True).run()
    table = at.dataframe[0].value
    assert numbers(table["ifd"]) == pytest.approx(sorted(ifd.values(), reverse=True), abs=5e-4)


def test_hard_tokens_page_ranks_tokens_and_filters_the_explorer(monkeypatch, token_profile):
    at = goto(app(monkeypatch, token_profile), "hard_tokens")
    assert at.title[0].value == "Hard tokens"
    expected = expected_ranking(direct_hard_tokens(token_profile, 2), 5)
    table = at.dataframe[0].value
    assert list(table["token"]) == [queries.visible_token(k) for k, _, _ in expected][:50]
    assert table["mean_nll"][0] == pytest.approx(expected[0][1], rel=1e-6)  # the top token and its mean
    assert list(table["count"]) == [n for _, _, n in expected][:50]
    assert f"{len(expected)} of " in captions(at) and "at checkpoint 3 · step" in captions(at)  # 1-based
    at.number_input(key="ht_min").set_value(20).run()
    at20 = expected_ranking(direct_hard_tokens(token_profile, 2), 20)
    assert list(at.dataframe[0].value["token"]) == [queries.visible_token(k) for k, _, _ in at20]
    assert min(at.dataframe[0].value["count"]) >= 20
    # Choosing a token filters the explorer to the examples that hold it.
    top = at20[0][0]
    con = duckdb.connect(str(token_profile), read_only=True)
    holding = {e for e, toks in con.execute("SELECT * FROM example_tokens").fetchall() if top in map(token_key, toks)}
    con.close()
    at.selectbox(key="ht_pick").set_value(top)
    at.button(key="ht_go").click().run()
    assert not at.exception and at.title[0].value == "Explorer"
    assert f"{len(holding)} examples match the filter" in captions(at)
    assert set(at.dataframe[0].value["example_id"]) == holding
    assert at.sidebar.code[0].value == queries.visible_token(top)
    spans = parse_token_html(at.html[0].value).spans  # the token is outlined in the token view
    assert [s["cls"] == "hit" for s in spans] == [token_key(s["text"]) == top for s in spans]
    assert any(s["cls"] == "hit" for s in spans)
    at.switch_page("views/explorer.py")  # where the browser now is (AppTest keeps its own page between runs)
    next(b for b in at.sidebar.button if b.label == "Clear the token filter").click().run()
    assert f"{N_OK + N_BAD + N_INJECT} examples match the filter" in captions(at)
    assert not at.sidebar.code and not any(s["cls"] for s in parse_token_html(at.html[0].value).spans)


def test_ifd_colours_the_data_map_and_filters(monkeypatch, token_profile):
    con = duckdb.connect(str(token_profile), read_only=True)
    ifd = dict(con.execute("SELECT example_id, ifd FROM ifd").fetchall())
    con.close()
    at = goto(app(monkeypatch, token_profile), "data_map")
    assert at.radio(key="map_color").options == ["region", "split", "ifd"]
    at.radio(key="map_color").set_value("ifd").run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    traces = {t["name"]: t for t in spec["data"]}
    colored = traces["IFD"]
    ids = [c[0] for c in colored["customdata"]]
    assert sorted(ids) == sorted(ifd)
    assert colored["marker"]["color"] == pytest.approx([math.log10(ifd[i]) for i in ids])
    assert len(traces.get("no IFD", {"x": []})["x"]) == N_OK + N_INJECT - len(ifd)
    # The colour axis (log10 IFD) runs from the 5th percentile to IFD 1 at least: most points get distinct colours.
    axis = colored["marker"]
    logs = sorted(math.log10(v) for v in ifd.values())
    assert axis["cmin"] == pytest.approx(min(logs[int(0.05 * (len(logs) - 1))], axis["cmax"] - 0.3))
    assert axis["cmax"] >= 0 and sum(axis["cmin"] <= v <= axis["cmax"] for v in logs) >= 0.9 * len(logs)
    # The sidebar filter, on the log10 scale.
    slider = at.sidebar.slider(key="f_ifd")
    logs = [math.log10(v) for v in ifd.values()]
    assert slider.min <= min(logs) and max(logs) <= slider.max
    cut = round(float(np.median(logs)), 2)
    slider.set_value((slider.min, cut)).run()
    n = sum(v <= 10**cut for v in ifd.values())
    assert f"Density: all {n} scored examples" in captions(at)
    assert f"IFD {10**slider.min:,.4g} to {10**cut:,.4g}" in "\n".join(c.value for c in at.sidebar.caption)


def test_pages_of_a_profile_without_token_scores(monkeypatch, old_profile):
    at = goto(app(monkeypatch, old_profile), "explorer")
    assert "--token-scores last" in at.info[0].value and "--token-scores all" in at.info[0].value
    assert "ifd" not in at.dataframe[0].value.columns and metrics(at)["IFD"] == "-"
    assert "f_ifd" not in [s.key for s in at.sidebar.slider]
    goto(at, "hard_tokens")
    assert "no token scores" in at.info[0].value and "--token-scores" in at.info[0].value
    goto(at, "data_map")
    assert at.radio(key="map_color").options == ["region", "split"]


def test_a_2000_token_response_renders_within_1s(monkeypatch, long_profile):
    at = goto(app(monkeypatch, long_profile), "explorer")
    toks, nll = direct_tokens(long_profile, LONG_ID)
    at.selectbox(key="ex_pick").set_value(LONG_ID)
    t0 = time.perf_counter()
    at.run()
    t_nll = time.perf_counter() - t0
    assert not at.exception
    check_token_html(at.html[0].value, toks, nll[2])
    at.radio(key="tok_mode").set_value(at.radio(key="tok_mode").options[1])
    t0 = time.perf_counter()
    at.run()
    t_change = time.perf_counter() - t0
    assert len(parse_token_html(at.html[0].value).spans) == 2000
    print(f"2,000-token explorer page: NLL view {t_nll:.2f}s, change view {t_change:.2f}s")
    assert t_nll < 1.0 and t_change < 1.0


# --- a profile still being scored ------------------------------------------------------------------------------
def test_overview_of_an_unfinished_profile(monkeypatch, unfinished_profile):
    """Nothing has a confidence yet: no split-by-source chart (it was drawn empty, on a -1 to 1 axis), no split
    columns in the sources table (they read 0% and None), and the stage times only of the finished stages, the
    score stage named as not finished (it read "score 0.0s")."""
    at = app(monkeypatch, unfinished_profile)
    assert metrics(at)["Scored"] == "0" and "No confidence yet" in at.info[0].value
    assert not at.get("plotly_chart")  # neither the histogram nor the split by source
    sources = at.dataframe[0].value
    assert list(sources.columns) == ["source", "examples", "scored"] and set(sources["scored"]) == {0}
    assert "The split per source comes with the confidence" in captions(at)
    assert "Stage times: data 2.4s, finetune 1,810.2s · not finished yet: score" in captions(at)
    assert "score 0.0s" not in captions(at)


def test_a_finished_overview_shows_every_stage_time_and_medians_as_text(monkeypatch, small_profile):
    at = app(monkeypatch, small_profile)
    times = next(c.value for c in at.caption if c.value.startswith("Stage times"))
    assert "not finished" not in times and all(f"{s} " in times for s in ("data", "finetune", "score", "embed"))
    sources = at.dataframe[0].value
    assert "-" not in list(sources["median_confidence"]) and all(float(v) < 0 for v in sources["median_confidence"])
    assert len(at.get("plotly_chart")) == 2  # the histogram and the split by source


def _with_meta(src: Path, dest: Path, **values) -> Path:
    shutil.copy(src, dest)
    con = duckdb.connect(str(dest))
    for key, value in values.items():
        con.execute("UPDATE meta SET value = ? WHERE key = ?", [json.dumps(value), key])
    con.close()
    return dest


@pytest.mark.parametrize(
    ("config", "stages", "says"),
    [
        (None, None, "Not embedded yet: the embedding comes with the last checkpoint's scoring"),
        ({"embed": False, "projection": "auto"}, "done", "it was profiled with --no-embed"),
        ({"embed": True, "projection": "none"}, "done", "it was profiled with --projection none"),
    ],
)
def test_semantic_map_tells_not_embedded_yet_from_not_asked_for(
    monkeypatch, unfinished_profile, tmp_path, config, stages, says
):
    """The run's meta tells a profile that is not embedded yet (its embed stage not finished) from one profiled
    without an embedding or a map."""
    table = unfinished_profile
    if config is not None:
        done = dict.fromkeys(["data", "finetune", "score", "confidence", "embed"], stages)
        table = _with_meta(unfinished_profile, tmp_path / "run.duckdb", score_config=config, stages=done)
    at = goto(app(monkeypatch, table), "semantic_map")
    assert says in at.info[0].value
    if config is not None:
        assert "yet" not in at.info[0].value


def test_explorer_of_an_unfinished_profile(monkeypatch, unfinished_profile):
    """Unscored examples read "-" for their rank and scores (not "None"); one with token NLLs already says that its
    scores are not written yet while its token NLLs are, and shows them."""
    at = goto(app(monkeypatch, unfinished_profile), "explorer")
    table = at.dataframe[0].value
    assert set(table["rank"]) == {"-"} and set(table["confidence"]) == {"-"}
    assert metrics(at)["Rank"] == "-" and metrics(at)["Confidence"] == "-"
    with_tokens = next(e for e in table["example_id"] if e.endswith("1"))  # the first usable one: token scored
    at.selectbox(key="ex_pick").set_value(with_tokens).run()
    assert metrics(at)["Split"] == "unscored" and len(at.html) == 1
    assert (
        "This example's confidence, split and rank are not written yet (they come when the profile's scoring ends); "
        "its token NLLs at checkpoint 3 are: shaded below."
    ) in captions(at)


@pytest.mark.parametrize("sort", queries.SORTABLE)
def test_explorer_table_fits_the_page(monkeypatch, small_profile, sort):
    """The response was cut off at the page's right edge (the columns were wider than the page): every column has a
    width, those shown (the id, the sort key, split, source, prompt and response) add up to the page's width in a
    1,400-pixel window at most, the others are hidden (the table's column menu shows them)."""
    from dashboard.state import TABLE_WIDTH

    at = goto(app(monkeypatch, small_profile), "explorer")
    at.selectbox(key="ex_sort").set_value(sort).run()
    table = at.dataframe[0]
    config = json.loads(table.proto.columns)
    order = list(table.proto.column_order)
    shown = [c for c in order if not config[c].get("hidden")]
    assert shown[:2] == ["example_id", sort] or sort not in order
    assert {"example_id", "split", "source", "prompt", "response"} <= set(shown)
    assert all(isinstance(config[c]["width"], int) for c in order)
    assert TABLE_WIDTH - 10 <= sum(config[c]["width"] for c in shown) <= TABLE_WIDTH
    assert min(config[c]["width"] for c in ("prompt", "response")) >= 150  # room for the text to wrap
    assert set(order) - set(shown) <= {"region", "confidence", "variability", "mean_nll", "ifd", "rank", "status"}


def test_hard_tokens_of_an_unfinished_profile_counts_both(monkeypatch, unfinished_profile):
    at = goto(app(monkeypatch, unfinished_profile), "hard_tokens")
    n = N_UNFINISHED
    assert f"of the {N_TOKEN_SCORED} examples with token scores among the {n} that match the filter" in captions(at)


def test_a_second_server_reads_the_comparison_kept_beside_the_table(
    monkeypatch, small_profile, other_profile, tmp_path
):
    """The comparison is kept in the dashboard's cache beside table A, keyed by both tables' content: a new server
    (Streamlit's caches cleared) on the same two tables reads it instead of comparing again; another table B is
    compared again."""
    import streamlit as st

    from profiler.table import compare

    a, b = tmp_path / "a" / "run.duckdb", tmp_path / "b" / "run.duckdb"
    for src, dest in ((small_profile, a), (other_profile, b)):
        dest.parent.mkdir()
        shutil.copy(src, dest)
    calls = []
    real = compare.compare_tables

    def counted(x, y):
        calls.append((x, y))
        if len(calls) > 1:
            raise AssertionError("compared again")
        return real(x, y)

    monkeypatch.setattr(compare, "compare_tables", counted)
    first = metrics(goto(app(monkeypatch, a, b), "compare"))
    assert len(calls) == 1 and first["Common examples"] == str(N_OK)
    st.cache_data.clear()
    st.cache_resource.clear()  # a new server: only what is kept beside the table remains
    at = goto(app(monkeypatch, a, b), "compare")
    assert metrics(at) == first and len(calls) == 1
    assert "examples change split" in at.subheader[0].value
    # Another B (another content key): compared again.
    c = tmp_path / "c" / "run.duckdb"
    c.parent.mkdir()
    shutil.copy(other_profile, c)
    calls.clear()
    goto(app(monkeypatch, a, c), "compare")
    assert len(calls) == 1


def test_a_box_on_the_compare_scatter_filters_the_other_pages(monkeypatch, small_profile, other_profile):
    """A box drawn on the compare scatter (as its selection event stores it) is the filter of every page: the
    compare page counts it and outlines it, the explorer lists exactly the common examples inside it."""
    from dashboard.queries import Shape
    from dashboard.state import SHAPE_KEY
    from profiler.table.compare import compare_tables

    joined = compare_tables(small_profile, other_profile).joined
    x = (-joined["confidence_a"]).log10()
    y = (-joined["confidence_b"]).log10()
    x0, x1, y0 = float(x.median()), float(x.max()) + 1, float(y.min()) - 1
    y1 = float(y.max()) + 1
    expected = set(joined.filter((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))["example_id"])
    assert 0 < len(expected) < joined.height
    from dashboard.cache import content_key
    from profiler.table import open_table

    with open_table(other_profile) as t:
        key_b = content_key(t)
    box = (("box", (x0, x1), (y0, y1)),)
    at = goto(app(monkeypatch, small_profile, other_profile), "compare")
    at.session_state[SHAPE_KEY] = Shape("compare", box, against="an older state of B")
    at.run()  # made against a B written again since: dropped, said so
    assert "was cleared: the compared table has changed" in captions(at) and not at.success
    at.session_state[SHAPE_KEY] = Shape("compare", box, against=key_b)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"{len(expected):,} examples inside the box on the compare scatter" in at.success[0].value
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert any(t.get("name") == "selection" for t in spec["data"])  # the box outlined
    at = goto(at, "explorer")
    assert f"{len(expected):,} examples match the filter" in captions(at)
    assert set(at.dataframe[0].value["example_id"]) == expected


def test_a_second_server_draws_the_maps_from_what_is_kept_beside_the_table(monkeypatch, small_profile, tmp_path):
    """The whole table's map cells, extents, point samples and the dynamics' traced sample are kept beside it: a new
    server (Streamlit's caches cleared) draws the same data map, semantic map and dynamics without computing them
    again; a filter still computes its own."""
    import streamlit as st

    table = tmp_path / "t" / "run.duckdb"
    table.parent.mkdir()
    shutil.copy(small_profile, table)
    pages = ("data_map", "semantic_map", "dynamics")

    def specs(at) -> list[list[str]]:
        out = []
        for page in pages:
            goto(at, page)
            out.append([c.proto.spec for c in at.get("plotly_chart")])
        return out

    first = specs(app(monkeypatch, table))
    st.cache_data.clear()
    st.cache_resource.clear()  # a new server: only what is kept beside the table remains
    calls = []

    def spy(name, real):
        return lambda *a, **kw: calls.append(name) or real(*a, **kw)

    for name in ("density", "sample_points", "map_extent", "trajectories"):
        monkeypatch.setattr(queries, name, spy(name, getattr(queries, name)))
    at = app(monkeypatch, table)
    assert specs(at) == first and calls == []  # the same figures, nothing computed again
    at.session_state["f_splits"] = ["confident"]
    goto(at, "data_map")
    assert "density" in calls and "sample_points" in calls  # a filtered map computes its own


def test_compare_page_with_a_profile_not_scored_yet(monkeypatch, small_profile, unfinished_profile):
    at = goto(app(monkeypatch, small_profile, unfinished_profile), "compare")
    assert "has no confidence yet" in at.info[0].value


def test_hard_tokens_under_a_large_filter_say_they_count_a_sample(monkeypatch, token_profile):
    """Past ``TOKEN_SAMPLE`` matching examples the page counts a fixed sample and says so; the toggle counts all."""
    import streamlit as st

    st.cache_data.clear()  # totals cached under another sample size by an earlier test
    monkeypatch.setattr(queries, "TOKEN_SAMPLE", 4)
    at = goto(app(monkeypatch, token_profile), "hard_tokens")
    assert not at.toggle  # the whole table's totals are kept: never sampled
    at.sidebar.multiselect(key="f_sources").set_value(["chat"]).run()
    assert f"a fixed random sample of 4 of the {N_CHAT} examples that match the filter" in captions(at)
    assert at.toggle(key="ht_every").label == f"Count all {N_CHAT} matching examples"
    at.toggle(key="ht_every").set_value(True).run()
    assert f"the {N_CHAT} examples that match the filter" in captions(at) and "sample" not in captions(at)
