"""Token-level views: the token HTML (escaped, one span per token, values in titles), the change view, the hard
tokens aggregation and the token filter, each checked against the table's lists read directly."""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from html.parser import HTMLParser

import duckdb
import numpy as np
import pytest

from dashboard import queries, tokens
from dashboard.queries import Filter
from profiler import open_table
from tests.conftest import N_BAD, N_CHAT, N_FAQ
from tests.dashboard.conftest import LONG_ID, N_INJECT, SCRIPT

TITLE_NLL = re.compile(r"^(?P<tok>\".*\") · NLL (?P<nll>-?[\d.]+) · p (?P<p>[\d.e+-]+)$", re.S)
TITLE_CHANGE = re.compile(r"^(?P<tok>\".*\") · Δ NLL (?P<d>[+-][\d.]+) \((?P<a>[\d.]+) → (?P<b>[\d.]+)\)$", re.S)


class TokenSpans(HTMLParser):
    """The token spans of a token view (text without the newline marks, title, background) and every tag seen."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.spans: list[dict] = []
        self._stack: list[dict | None] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        self._in_style = tag == "style"
        if tag == "span" and "title" in attrs:
            span = {"text": "", "title": attrs["title"], "style": attrs.get("style", ""), "cls": attrs.get("class")}
            self.spans.append(span)
            self._stack.append(span)
        elif tag == "span":
            self._stack.append({"mark": attrs.get("class") == "nl"})
        else:
            self._stack.append(None)

    def handle_endtag(self, tag):
        self._in_style = False
        self._stack.pop()

    def handle_data(self, data):
        if self._in_style or not self._stack or self._stack[-1] is None:
            return
        top = self._stack[-1]
        if top.get("mark"):
            assert data == "\u21b5"  # the faint newline mark, the only text that is not a token's
            return
        if "title" in top:
            top["text"] += data


def parse_token_html(html: str) -> TokenSpans:
    p = TokenSpans()
    p.feed(html)
    p.close()
    return p


def direct_tokens(path, example_id: str) -> tuple[list[str], dict[int, np.ndarray]]:
    """An example's token texts and its NLL lists by checkpoint, read from the file's tables directly."""
    con = duckdb.connect(str(path), read_only=True)
    toks = con.execute("SELECT tokens FROM example_tokens WHERE example_id = ?", [example_id]).fetchone()[0]
    nll = dict(con.execute("SELECT checkpoint_id, nll FROM token_scores WHERE example_id = ?", [example_id]).fetchall())
    con.close()
    return toks, {k: np.asarray(v, dtype=np.float32) for k, v in nll.items()}


def inject_id(path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    eid = con.execute("SELECT example_id FROM examples WHERE response LIKE '%pwned%'").fetchone()[0]
    con.close()
    return eid


def check_token_html(html: str, toks: list[str], nll: np.ndarray) -> TokenSpans:
    """The NLL view shows every token once, in order, as escaped text, with its NLL in its title."""
    assert "<script" not in html and "<b>" not in html and "<img" not in html
    p = parse_token_html(html)
    assert set(p.tags) <= {"style", "div", "span"}  # no tag of the example's text became an element
    assert [s["text"] for s in p.spans] == toks
    for s, tok, v in zip(p.spans, toks, nll.tolist()):
        m = TITLE_NLL.match(s["title"])
        assert m, s["title"]
        assert json.loads(m["tok"]) == tok
        assert float(m["nll"]) == pytest.approx(v, abs=5e-4)
        assert float(m["p"]) == pytest.approx(np.exp(-v), rel=1e-2)
    return p


def test_token_key_trims_whitespace_and_shows_whitespace_tokens():
    assert queries.token_key(" the") == queries.token_key("the\n") == "the"
    assert queries.token_key("\n") == "\u21b5" and queries.token_key(" ") == "\u2423"
    assert queries.token_key("\n\n") == "\u21b5\u21b5" and queries.token_key("") == ""
    assert queries.token_key(" a b ") == "a b"
    assert queries.token_key("\t x\t") == "x" and queries.token_key("  \n") == "\u2423\u2423\u21b5"


def test_nll_html_escapes_every_token_and_titles_its_value(token_profile):
    eid = inject_id(token_profile)
    toks, nll = direct_tokens(token_profile, eid)
    assert "".join(toks).startswith("Sure: " + SCRIPT)
    with open_table(token_profile) as t:
        data = queries.example_tokens(t.cursor(), eid)
    assert data["tokens"] == toks and sorted(data["nll"]) == [0, 1, 2] == sorted(nll)
    assert (data["first"], data["last"]) == (0, 2)
    for cid in nll:
        assert np.array_equal(np.asarray(data["nll"][cid], dtype=np.float32), nll[cid])
    html = tokens.nll_html(toks, data["nll"][2])
    p = check_token_html(html, toks, nll[2])
    joined = "".join(s["text"] for s in p.spans)
    assert SCRIPT in joined and "<b>bold</b>" in joined and "&amp;" in joined  # shown literally, as text
    assert "\n\tIndented\n  two" in joined  # whitespace kept (the view is white-space: pre-wrap)
    assert "white-space:pre-wrap" in html
    # Shades: white at NLL 0, the full colour at vmax and above, darker for higher NLLs.
    vmax = float(np.max(nll[2]))
    shades = tokens.nll_colors(np.array([0.0, vmax / 2, vmax, 10 * vmax]), vmax)
    assert shades[0] == "#ffffff" and shades[2] == shades[3] == "#{:02x}{:02x}{:02x}".format(*tokens.HIGH)
    html = tokens.nll_html(toks, nll[2], vmax=vmax)
    top = int(np.argmax(nll[2]))
    assert parse_token_html(html).spans[top]["style"] == f"background:{shades[2]}"


def test_change_html_is_last_minus_first(token_profile):
    eid = inject_id(token_profile)
    toks, nll = direct_tokens(token_profile, eid)
    html = tokens.change_html(toks, nll[0], nll[2])
    p = parse_token_html(html)
    assert [s["text"] for s in p.spans] == toks and "<script" not in html
    expected = nll[2].astype(np.float64) - nll[0].astype(np.float64)
    got = []
    for s, v0, v2 in zip(p.spans, nll[0].tolist(), nll[2].tolist()):
        m = TITLE_CHANGE.match(s["title"])
        assert m, s["title"]
        assert (float(m["a"]), float(m["b"])) == pytest.approx((v0, v2), abs=5e-4)
        got.append(float(m["d"]))
    assert np.allclose(got, expected, atol=5e-4)
    assert np.array_equal(tokens.token_change(nll[0], nll[2]), expected)
    # Blue where the NLL fell, red where it rose, white where it stayed.
    vmax = float(np.abs(expected).max())
    blue, red, white = tokens.change_colors(np.array([-vmax, vmax, 0.0]), vmax)
    assert blue == "#{:02x}{:02x}{:02x}".format(*tokens.LEARNED) and white == "#ffffff"
    assert red == "#{:02x}{:02x}{:02x}".format(*tokens.HIGH)
    shades = [s["style"] for s in p.spans]
    assert shades[int(np.argmin(expected))].startswith("background:#") and shades[int(np.argmin(expected))] != (
        "background:#ffffff"
    )
    with pytest.raises(ValueError, match="must align"):
        tokens.change_html(toks, nll[0][:-1], nll[2])


def test_a_2000_token_response_renders_in_under_a_second(long_profile):
    toks, nll = direct_tokens(long_profile, LONG_ID)
    assert len(toks) == 2000
    tokens.nll_html(toks, nll[2])  # warm
    t0 = time.perf_counter()
    html = tokens.nll_html(toks, nll[2])
    t_nll = time.perf_counter() - t0
    t0 = time.perf_counter()
    change = tokens.change_html(toks, nll[0], nll[2])
    t_change = time.perf_counter() - t0
    print(f"2,000-token HTML: NLL view {t_nll * 1000:.1f} ms, change view {t_change * 1000:.1f} ms")
    assert t_nll < 1.0 and t_change < 1.0
    assert len(parse_token_html(html).spans) == len(parse_token_html(change).spans) == 2000


def direct_hard_tokens(path, checkpoint_id: int, ids: set[str] | None = None) -> dict[str, list[float]]:
    """NLLs by token key at one checkpoint, from the table's lists in Python (of the examples ``ids``, or all)."""
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute(
        "SELECT t.example_id, x.tokens, t.nll FROM token_scores t JOIN example_tokens x USING (example_id) "
        "WHERE checkpoint_id = ?",
        [checkpoint_id],
    ).fetchall()
    con.close()
    by_key: dict[str, list[float]] = defaultdict(list)
    for eid, toks, nll in rows:
        if ids is not None and eid not in ids:
            continue
        assert len(toks) == len(nll)
        for tok, v in zip(toks, nll):
            if queries.token_key(tok):
                by_key[queries.token_key(tok)].append(v)
    return by_key


def expected_ranking(by_key: dict[str, list[float]], min_count: int) -> list[tuple[str, float, int]]:
    stats = [(k, float(np.mean(np.asarray(v, dtype=np.float32), dtype=np.float64)), len(v)) for k, v in by_key.items()]
    return sorted((s for s in stats if s[2] >= min_count), key=lambda s: (-s[1], s[0]))


def test_hard_tokens_match_a_direct_computation(token_profile):
    by_key = direct_hard_tokens(token_profile, 2)
    with open_table(token_profile) as t:
        con = t.cursor()
        assert queries.token_checkpoints(con)["checkpoint_id"].to_list() == [0, 1, 2]
        for min_count in (5, 1, 20):
            table, info = queries.hard_tokens(con, min_count=min_count, limit=1000)
            expected = expected_ranking(by_key, min_count)
            assert table["token"].to_list() == [k for k, _, _ in expected]
            assert np.allclose(table["mean_nll"].to_numpy(), [m for _, m, _ in expected], rtol=1e-6)
            assert table["count"].to_list() == [n for _, _, n in expected]
            assert info["kept"] == len(expected) and info["distinct"] == len(by_key)
        assert info["checkpoint_id"] == 2 and info["examples"] == N_FAQ + N_CHAT + N_INJECT
        assert info["tokens"] == sum(len(v) for v in by_key.values())
        top, _ = queries.hard_tokens(con, min_count=5, limit=3)
        assert top.height == 3 and top["token"][0] == expected_ranking(by_key, 5)[0][0]
        # The sidebar filter narrows the examples counted.
        chat_ids = {r[0] for r in con.execute("SELECT example_id FROM example_view WHERE source = 'chat'").fetchall()}
        table, info = queries.hard_tokens(con, Filter(sources=("chat",)), min_count=2, limit=1000)
        expected = expected_ranking(direct_hard_tokens(token_profile, 2, chat_ids), 2)
        assert table["token"].to_list() == [k for k, _, _ in expected] and info["examples"] == N_CHAT


def test_hard_tokens_under_a_large_filter_count_a_fixed_sample(token_profile):
    """Past ``sample`` matching examples the totals are those of the first ``sample`` by the points' seeded key
    (the same on every call), and the summary says how many were taken of how many."""
    con = duckdb.connect(str(token_profile), read_only=True)
    chat = con.execute("SELECT example_id FROM examples WHERE source = 'chat' ORDER BY hash(example_id, 0)").fetchall()
    con.close()
    k = len(chat) // 3
    chosen = {r[0] for r in chat[:k]}
    with open_table(token_profile) as t:
        c = t.cursor()
        flt = Filter(sources=("chat",))
        table, info = queries.hard_tokens(c, flt, min_count=1, limit=1000, sample=k)
        expected = expected_ranking(direct_hard_tokens(token_profile, 2, chosen), 1)
        assert table["token"].to_list() == [key for key, _, _ in expected]
        assert np.allclose(table["mean_nll"].to_numpy(), [m for _, m, _ in expected], rtol=1e-6)
        assert table["count"].to_list() == [n for _, _, n in expected]
        assert info["sampled"] == k and info["matching"] == len(chat) == N_CHAT and info["examples"] == k
        again, _ = queries.hard_tokens(c, flt, min_count=1, limit=1000, sample=k)
        assert again.equals(table)
        # A sample at least as large as the filter counts every example.
        whole, info = queries.hard_tokens(c, flt, min_count=1, limit=1000, sample=len(chat))
        assert info["sampled"] is None and info["examples"] == N_CHAT
        assert whole.equals(queries.hard_tokens(c, flt, min_count=1, limit=1000)[0])


def test_the_token_filter_keeps_the_examples_holding_the_token(token_profile):
    con = duckdb.connect(str(token_profile), read_only=True)
    rows = con.execute("SELECT example_id, tokens FROM example_tokens").fetchall()
    con.close()
    with open_table(token_profile) as t:
        c = t.cursor()
        top = queries.hard_tokens(c, min_count=5, limit=5)[0]["token"].to_list()
        for key in [*top, "\u21b5", "script", "no such token"]:
            texts = queries.token_texts(c, key)
            assert set(texts) == {x for _, toks in rows for x in toks if queries.token_key(x) == key}
            expected = {eid for eid, toks in rows if any(queries.token_key(x) == key for x in toks)}
            got = set(queries.explore(c, Filter(token=key, token_texts=texts), limit=1000)[0]["example_id"])
            assert got == expected, key
        assert queries.count(c, Filter(token="script", token_texts=queries.token_texts(c, "script"))) == 1
        sql = "'; DROP TABLE examples; --"
        assert queries.count(c, Filter(token=sql, token_texts=(sql,))) == 0  # a parameter, not SQL
        assert queries.count(c, Filter()) == N_FAQ + N_CHAT + N_BAD + N_INJECT


def test_ifd_in_the_queries(token_profile):
    con = duckdb.connect(str(token_profile), read_only=True)
    ifd = dict(con.execute("SELECT example_id, ifd FROM ifd").fetchall())
    con.close()
    assert len(ifd) >= N_FAQ + N_CHAT  # every scored example of more than one token
    with open_table(token_profile) as t:
        c = t.cursor()
        ov = queries.overview(c)
        assert ov["with_ifd"] == len(ifd) and ov["max_ifd"] == pytest.approx(max(ifd.values()))
        page, _ = queries.explore(c, Filter(), sort="ifd", descending=True, limit=1000)
        shown = {r["example_id"]: r["ifd"] for r in page.iter_rows(named=True) if r["ifd"] is not None}
        assert shown == pytest.approx(ifd)
        assert page["ifd"].drop_nulls().to_list() == sorted(ifd.values(), reverse=True)
        cut = float(np.median(list(ifd.values())))
        assert queries.count(c, Filter(ifd_max=cut)) == sum(v <= cut for v in ifd.values())
        assert queries.count(c, Filter(ifd_min=cut, ifd_max=cut * 10)) == sum(
            cut <= v <= cut * 10 for v in ifd.values()
        )
        pts, _ = queries.sample_points(c, Filter(), cap=1000)
        assert dict(zip(pts["example_id"], pts["ifd"])) == pytest.approx({k: ifd.get(k) for k in pts["example_id"]})
        data, n = queries.export_file(c, Filter(), "confident", "jsonl")
        records = [json.loads(line) for line in data.decode().splitlines()]
        assert n == len(records) and all(r["ifd"] == pytest.approx(ifd.get(r["example_id"])) for r in records)


def test_a_profile_from_before_token_scores_reads_empty(old_profile):
    with open_table(old_profile) as t:
        c = t.cursor()
        assert queries.token_checkpoints(c).is_empty()
        assert queries.example_tokens(c, "syn0000000000001") is None
        table, info = queries.hard_tokens(c)
        assert table.is_empty() and info["checkpoint_id"] is None and info["tokens"] == 0
        assert queries.overview(c)["with_ifd"] == 0 and queries.overview(c)["max_ifd"] is None
        assert queries.token_texts(c, "the") == () and queries.count(c, Filter(token="the")) == 0
        assert queries.explore(c, Filter(), sort="ifd")[0]["ifd"].null_count() == queries.count(c, Filter())
