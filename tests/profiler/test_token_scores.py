"""Token-level losses (`--token-scores`), their decoded text, and IFD (`--ifd`, `--ifd-model`): exact against the
model's own per-token loss, stored as the table contract says, kept through resume, and readable from older files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from profiler import open_table
from profiler.config import ScoreConfig
from profiler.data.render import RenderedExample
from profiler.data.tokens import REPLACEMENT, start_tokens, token_texts
from profiler.export import export_split
from profiler.ifd import alone_item
from profiler.pipeline import run_score
from profiler.pipeline.prepare import prepare_data
from profiler.scoring import ScoreItem, TorchScorer, token_budget_batches
from profiler.scoring.torch_backend import needed_tokens
from profiler.table import SCHEMA_VERSION
from tests.conftest import ALPACA_ROWS, CHAT_ROWS, build_tiny_model, write_jsonl
from tests.profiler.test_scoring import make_items

NEW_TABLES = ("token_scores", "example_tokens", "ifd")


# --- fixtures: data, a second model (a second checkpoint, or --ifd-model), a tokenizer that adds a BOS ------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("token_data")
    return [str(write_jsonl(root / "alpaca.jsonl", ALPACA_ROWS)), str(write_jsonl(root / "chat.jsonl", CHAT_ROWS))]


@pytest.fixture(scope="module")
def second_llama(tmp_path_factory, chat_tokenizer_dir) -> Path:
    return build_tiny_model("llama", chat_tokenizer_dir, tmp_path_factory.mktemp("second_llama"), seed=1)


@pytest.fixture(scope="module")
def bos_llama(tmp_path_factory, plain_tokenizer_dir) -> Path:
    """A tiny model whose tokenizer puts <s> before a text (as Llama's and Gemma's do)."""
    from tokenizers.processors import TemplateProcessing

    tok = AutoTokenizer.from_pretrained(plain_tokenizer_dir)
    bos = tok.convert_tokens_to_ids("<s>")
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok_dir = tmp_path_factory.mktemp("bos_tokenizer")
    tok.save_pretrained(tok_dir)
    return build_tiny_model("llama", tok_dir, tmp_path_factory.mktemp("bos_llama"))


def config(model, data, out, **kw) -> ScoreConfig:
    return ScoreConfig(model=str(model), data=data, out=str(out), progress=False, embed=False, **kw)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, tiny_llama, second_llama, data) -> tuple[ScoreConfig, Path]:
    """A run over two checkpoints (second_llama, then tiny_llama) with the default token scores and IFD."""
    out = tmp_path_factory.mktemp("two_ckpt") / "run.duckdb"
    cfg = config(tiny_llama, data, out, checkpoints=[str(second_llama), str(tiny_llama)])
    return cfg, Path(run_score(cfg))


def contents(path: Path) -> dict:
    """The table's token scores, token texts and IFD, as plain values."""
    with open_table(path) as t:
        return {
            "tokens": t.frame("SELECT * FROM token_scores ORDER BY ALL").rows(),
            "texts": t.frame("SELECT * FROM example_tokens ORDER BY ALL").rows(),
            "ifd": t.ifd.rows(),
            "scores": t.scores.select("example_id", "checkpoint_id", "nll_sum").rows(),
        }


def assert_same_contents(a: dict, b: dict) -> None:
    assert [r[:2] for r in a["tokens"]] == [r[:2] for r in b["tokens"]] and a["texts"] == b["texts"]
    for ra, rb in zip(a["tokens"], b["tokens"]):
        assert ra[2] == pytest.approx(rb[2], abs=1e-5)
    assert [(r[0], r[1], r[2], r[4]) for r in a["ifd"]] == [(r[0], r[1], r[2], r[4]) for r in b["ifd"]]
    assert [r[5] for r in a["ifd"]] == pytest.approx([r[5] for r in b["ifd"]], rel=1e-5)
    assert [r[:2] for r in a["scores"]] == [r[:2] for r in b["scores"]]
    assert [r[2] for r in a["scores"]] == pytest.approx([r[2] for r in b["scores"]], abs=1e-5)


def response_text(messages_json: str, end: str) -> str:
    """What the scored tokens of an example decode to: each assistant turn with its end-of-turn marker."""
    return "".join(m["content"] + end for m in json.loads(messages_json) if m["role"] == "assistant")


# --- the scorer ----------------------------------------------------------------------------------------------
def test_token_nlls_are_the_models_own_per_token_losses(tiny_llama, chat_tokenizer_dir):
    """Each token's NLL is the model's cross-entropy at that position, with prefix sharing, chunked LM head,
    several batches and the embedding pass; they sum to nll_sum."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    tok, items = make_items(chat_tokenizer_dir, n=10, seed=7)  # every third example is multi-turn
    scorer = TorchScorer(model, max_tokens=200, chunk_tokens=7, pad_token_id=tok.pad_token_id)
    assert scorer._shared_prefix(items[:2]) > 0  # the template's system prompt is shared
    for embed in (False, True):
        got = {s.example_id: s for b in scorer.score(items, progress=False, embed=embed, tokens=True) for s in b}
        for it in items:
            ids = torch.tensor([list(it.input_ids)])
            with torch.no_grad():
                per_pos = F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none")
            positions = [t for t in range(1, len(it.input_ids)) if it.response_mask[t]]
            s = got[it.example_id]
            assert s.token_nll.dtype == np.float32 and len(s.token_nll) == s.n_tokens == len(positions)
            np.testing.assert_allclose(s.token_nll, per_pos[[t - 1 for t in positions]].numpy(), atol=1e-5)
            assert abs(float(np.sum(s.token_nll, dtype=np.float64)) - s.nll_sum) < 1e-4
    plain = next(iter(scorer.score(items[:2], progress=False)))
    assert all(s.token_nll is None for s in plain)  # only when asked for


# --- decoded token texts -------------------------------------------------------------------------------------
def test_token_texts_join_to_the_response_for_byte_level_bpe(chat_tokenizer_dir):
    """SmolLM2's byte-level BPE: 'Ġ' reads as a space, a character split over several tokens goes to the token
    that completes it (no '�'), and the texts join to exactly the decoded response."""
    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    prompt, response = "Hi", "Hello world, €uro naïve 日本語 ok"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    resp = tok(" " + response, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    texts = token_texts(tok, ids + resp, [False] * len(ids) + [True] * len(resp))
    assert len(texts) == len(resp)
    assert "".join(texts) == " " + response + "<|im_end|>"
    assert not any(REPLACEMENT in t for t in texts)
    pieces = tok.convert_ids_to_tokens(resp)
    assert pieces[1] == "Ġworld" and texts[1] == " world"
    split = [i for i, p in enumerate(pieces) if p == "Ġæ"]  # '日' is three byte tokens here
    assert split and texts[split[0] : split[0] + 3] == [" ", "", "日"]


def test_token_texts_keep_the_spaces_a_sentencepiece_decoder_strips():
    """A Metaspace decoder strips the leading space of a decoded text: token by token, 'the cat' would read
    'thecat'. Decoded after the token before it, each keeps its space; byte-fallback pieces form one character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback(), decoders.Fuse()])
    special = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tk.train_from_iterator(["the cat sat on the mat"] * 10, trainers.BpeTrainer(vocab_size=300, special_tokens=special))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    ids = tok("the cat 日 sat", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids[:2]] == ["the", "cat"]  # what decoding alone gives
    texts = token_texts(tok, [1, *ids], [False] + [True] * len(ids))
    assert texts[:2] == [" the", " cat"] and "".join(texts) == " the cat 日 sat"
    assert start_tokens(tok) == []


def test_start_tokens_and_the_response_alone(chat_tokenizer_dir, bos_llama):
    assert start_tokens(AutoTokenizer.from_pretrained(chat_tokenizer_dir)) == []  # SmolLM2 adds no BOS
    bos_tok = AutoTokenizer.from_pretrained(bos_llama)
    assert start_tokens(bos_tok) == [bos_tok.convert_tokens_to_ids("<s>")]
    item = ScoreItem("x", [9, 8, 7, 6, 5, 4], [False, False, True, True, False, True])  # two turns: 7 6, then 4
    assert alone_item(item, []) == ScoreItem("x", [7, 6, 4], [True, True, True])
    assert alone_item(item, [1]) == ScoreItem("x", [1, 7, 6, 4], [False, True, True, True])
    one = ScoreItem("y", [9, 8, 7], [False, False, True])  # one response token, no BOS: nothing predicts it
    assert alone_item(one, []) is None and alone_item(one, [1]) is not None


# --- the table -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["last", "all", "none"])
def test_token_scores_per_mode_sum_to_nll_sum(mode, tiny_llama, second_llama, data, tmp_path):
    ckpts = [str(second_llama), str(tiny_llama)]
    cfg = config(tiny_llama, data, tmp_path / "run.duckdb", checkpoints=ckpts, token_scores=mode)
    with open_table(run_score(cfg)) as t:
        scores = {(r["example_id"], r["checkpoint_id"]): r for r in t.scores.iter_rows(named=True)}
        examples = {r["example_id"]: r for r in t.examples.iter_rows(named=True)}
        rows = t.token_scores()
        kept = {"last": {1}, "all": {0, 1}, "none": set()}[mode]
        assert set(zip(rows["example_id"], rows["checkpoint_id"])) == {k for k in scores if k[1] in kept}
        for r in rows.iter_rows(named=True):
            s = scores[(r["example_id"], r["checkpoint_id"])]
            assert len(r["nll"]) == s["n_tokens"] == len(r["tokens"])
            assert abs(math.fsum(r["nll"]) - s["nll_sum"]) < 1e-4
            assert "".join(r["tokens"]) == response_text(examples[r["example_id"]]["messages"], "<|im_end|>")
        texts = t.frame("SELECT * FROM example_tokens")
        assert texts.height == (0 if mode == "none" else len(examples))
        if mode == "all":  # the checkpoints differ, token by token
            by_ckpt = {(r["example_id"], r["checkpoint_id"]): r["nll"] for r in rows.iter_rows(named=True)}
            assert any(by_ckpt[(e, 0)] != by_ckpt[(e, 1)] for e in examples)


def _reference_ifd(model_dir: Path, cfg: ScoreConfig) -> dict[str, tuple[float, int]]:
    """IFD of each example from the model's own loss: ``model(input_ids, labels=...)`` on prompt + response (labels
    on the response) and on the response alone (after the tokenizer's BOS, if it adds one), token-weighted."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    bos = tok("a")["input_ids"][: -len(tok("a", add_special_tokens=False)["input_ids"])]
    out = {}
    for it in prepare_data(cfg).ok_items():
        eid, r = it.example_id, RenderedExample(it.input_ids.tolist(), it.response_mask.tolist())
        ids = torch.tensor([r.input_ids])
        with torch.no_grad():
            conditional = model(input_ids=ids, labels=torch.tensor([r.labels()])).loss.item()
            response = [t for t in r.labels() if t != -100]
            alone_ids = torch.tensor([bos + response])
            alone_labels = torch.tensor([[-100] * len(bos) + response])
            alone = model(input_ids=alone_ids, labels=alone_labels).loss.item()
        out[eid] = (math.exp(conditional) / math.exp(alone), len(response) - (0 if bos else 1))
    return out


@pytest.mark.parametrize("which", ["no_bos", "bos"])
def test_ifd_matches_the_models_own_loss(which, tiny_llama, bos_llama, data, tmp_path):
    model = tiny_llama if which == "no_bos" else bos_llama
    cfg = config(model, data, tmp_path / "run.duckdb", token_scores="none")
    with open_table(run_score(cfg)) as t:
        ifd = {r["example_id"]: r for r in t.ifd.iter_rows(named=True)}
        view = dict(t.frame("SELECT example_id, ifd FROM example_view").rows())
    ref = _reference_ifd(model, cfg)
    assert set(ifd) == set(ref) == set(view)  # every example has one (multi-turn included)
    for eid, (value, n) in ref.items():
        row = ifd[eid]
        assert row["ifd"] == pytest.approx(value, rel=1e-4) and view[eid] == row["ifd"]
        assert row["n_tokens"] == n and row["checkpoint_id"] == 0 and row["model"] == str(model)
    assert len({round(v, 6) for v in view.values()}) > 3  # not a constant


def test_ifd_model_scores_both_perplexities_on_that_model(tiny_llama, second_llama, data, tmp_path):
    cfg = config(tiny_llama, data, tmp_path / "run.duckdb", ifd_model=str(second_llama), token_scores="none")
    with open_table(run_score(cfg)) as t:
        ifd = {r["example_id"]: r for r in t.ifd.iter_rows(named=True)}
    ref = _reference_ifd(second_llama, cfg)
    assert set(ifd) == set(ref)
    for eid, (value, _) in ref.items():
        assert ifd[eid]["ifd"] == pytest.approx(value, rel=1e-4)
        assert ifd[eid]["checkpoint_id"] is None and ifd[eid]["model"] == str(second_llama.resolve())


def test_export_has_the_ifd(two_checkpoints, tiny_llama, data, tmp_path):
    _, path = two_checkpoints
    with open_table(path) as t:
        ifd = dict(t.ifd.select("example_id", "ifd").rows())
    n = export_split(path, tmp_path / "all.jsonl")
    records = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert n == len(records) == len(ifd) and {r["example_id"]: r["ifd"] for r in records} == ifd
    off = run_score(config(tiny_llama, data, tmp_path / "off.duckdb", ifd=False))
    export_split(off, tmp_path / "off.parquet")
    import polars as pl

    frame = pl.read_parquet(tmp_path / "off.parquet")
    assert "ifd" in frame.columns and frame["ifd"].null_count() == frame.height == len(ifd)
    with open_table(off) as t:
        assert t.ifd.is_empty() and t.frame("SELECT count(ifd) FROM example_view").item() == 0


def _as_older_file(src: Path, dst: Path) -> Path:
    """A copy of ``src`` as sftmix wrote it before 1.1: no token_scores, example_tokens or ifd tables."""
    shutil.copy(src, dst)
    con = duckdb.connect(str(dst))
    for name in NEW_TABLES:
        con.execute(f"DROP TABLE {name}")
    con.execute("UPDATE meta SET value = '\"1.0\"' WHERE key = 'schema_version'")
    con.close()
    return dst


def test_an_older_file_opens_with_the_same_views_and_a_rerun_fills_them_in(two_checkpoints, tmp_path):
    cfg, path = two_checkpoints
    old = _as_older_file(path, tmp_path / "old.duckdb")
    with open_table(path) as new_t, open_table(old) as t:
        assert t.meta["schema_version"] == "1.0"
        for view in ("example_view", "token_view"):  # the same columns and types, read from either file
            assert (
                t.frame(f"SELECT * FROM {view} LIMIT 0").schema == new_t.frame(f"SELECT * FROM {view} LIMIT 0").schema
            )
        assert t.frame("SELECT count(*), count(ifd) FROM example_view").row(0) == (9, 0)
        assert t.token_scores().is_empty() and t.ifd.is_empty()
        assert t.cursor().execute("SELECT count(*) FROM token_view").fetchone() == (0,)
        assert all(r["ifd"] is None for r in t.export_records())
        assert (
            t.frame("SELECT * FROM example_view ORDER BY example_id")
            .drop("ifd")
            .equals(new_t.frame("SELECT * FROM example_view ORDER BY example_id").drop("ifd"))
        )
    cfg.out = str(old)
    run_score(cfg)  # a re-run with this version adds what the older one did not store, keeping every score
    assert_same_contents(contents(old), contents(path))
    with open_table(old) as t:
        assert t.meta["schema_version"] == SCHEMA_VERSION == "1.1"


def test_resume_after_a_crash_keeps_token_scores_and_ifd(tiny_llama, second_llama, data, tmp_path, monkeypatch):
    ckpts = [str(second_llama), str(tiny_llama)]
    ref = run_score(config(tiny_llama, data, tmp_path / "ref.duckdb", checkpoints=ckpts, max_tokens=64))
    crashed = config(tiny_llama, data, tmp_path / "crashed.duckdb", checkpoints=ckpts, max_tokens=64)
    # Killed after the first batch of the last checkpoint (the first checkpoint's batches come before it) ...
    lengths = [len(needed_tokens(it).input_ids) for it in prepare_data(crashed).ok_items()]
    n_first = len(token_budget_batches(lengths, 64))
    with pytest.raises(RuntimeError, match="test hook"):
        run_score(crashed, stop_after_batches=n_first + 1)
    partial = contents(Path(crashed.out))
    assert 0 < len(partial["tokens"]) < len(contents(ref)["tokens"]) and partial["ifd"] == []
    # ... then in the IFD pass, after every score was written.
    import profiler.pipeline.score as score_mod

    def crash(*a, **k):
        raise RuntimeError("killed during IFD")

    monkeypatch.setattr(score_mod, "ifd_rows", crash)
    with pytest.raises(RuntimeError, match="killed during IFD"):
        run_score(crashed)
    assert len(contents(Path(crashed.out))["tokens"]) == len(contents(ref)["tokens"])
    monkeypatch.undo()
    run_score(crashed)
    assert_same_contents(contents(Path(crashed.out)), contents(ref))


def test_a_rerun_asking_for_more_skips_checkpoints_deleted_once_scored(tiny_llama, data, tmp_path, caplog):
    """`--keep-checkpoints none` deleted the weights after scoring: asking for token scores at every checkpoint on
    a re-run adds none (they cannot be computed) and says so, instead of failing on the missing weights."""
    from profiler.finetune import FinetuneConfig
    from profiler.pipeline import run_profile

    score = config(tiny_llama, data[:1], tmp_path / "run.duckdb")
    ft = FinetuneConfig(n_checkpoints=2, batch_size=4, learning_rate=1e-3, warmup_ratio=0.0, keep_checkpoints="none")
    run_profile(score, ft)
    assert not list((tmp_path / "run_checkpoints").glob("checkpoint-*"))
    before = contents(tmp_path / "run.duckdb")
    assert {r[1] for r in before["tokens"]} == {1} and len(before["ifd"]) == 7  # made before the weights went
    score.token_scores = "all"
    with caplog.at_level("WARNING", logger="profiler.pipeline.score"):
        run_profile(score, ft)
    assert "was deleted after scoring" in caplog.text
    assert contents(tmp_path / "run.duckdb") == before
