"""PairedSampler: balance, pairing, coverage, determinism, data-parallel sharding, and length-grouped batches (the
same pairs, less padding; in the trainer, its flag, its logged padding and exact resume)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler

from tests.trainer_plugin.test_train import config, profile  # noqa: F401 - the module-scoped fixture
from trainer_plugin.sampler import PairedSampler, padding_ratio
from trainer_plugin.trainer import example_lengths

CONF, UNCONF = list(range(0, 20)), list(range(100, 120))


def batches(sampler, size):
    return list(BatchSampler(sampler, size, drop_last=False))


def test_balance_pairing_and_coverage():
    s = PairedSampler(CONF, UNCONF, pairs_per_batch=4, seed=1)
    got = batches(s, 8)
    assert len(got) == len(s) // 8 == 5
    for b in got:
        assert all(i < 100 for i in b[:4]) and all(i >= 100 for i in b[4:])
    flat = [i for b in got for i in b]
    assert sorted(flat) == sorted(CONF + UNCONF)  # equal halves: every example exactly once
    assert s.n_repeated == 0


def test_repaired_each_epoch_and_deterministic():
    s = PairedSampler(CONF, UNCONF, pairs_per_batch=4, seed=1)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and sorted(e0) == sorted(e1)
    pairs0 = {tuple(p) for p in s.pairs(0)}
    pairs1 = {tuple(p) for p in s.pairs(1)}
    assert pairs0 != pairs1
    again = PairedSampler(CONF, UNCONF, pairs_per_batch=4, seed=1)
    assert list(again) == e0
    assert list(PairedSampler(CONF, UNCONF, pairs_per_batch=4, seed=2)) != e0


@pytest.mark.parametrize("n_c,n_u,k,world", [(7, 5, 2, 1), (5, 9, 3, 2), (1, 4, 1, 1), (10, 10, 3, 2)])
def test_unequal_halves_lose_nothing(n_c, n_u, k, world):
    conf, unconf = list(range(n_c)), list(range(100, 100 + n_u))
    s = PairedSampler(conf, unconf, pairs_per_batch=k, seed=0, world_size=world)
    flat = list(s)
    assert set(flat) == set(conf) | set(unconf)  # every example, every epoch
    assert len(flat) % (2 * k * world) == 0
    assert len(flat) - (n_c + n_u) == s.n_repeated
    for b in batches(s, 2 * k):
        assert all(i < 100 for i in b[:k]) and all(i >= 100 for i in b[k:])


def test_data_parallel_sharding_gives_whole_pairs_once():
    from accelerate.data_loader import BatchSamplerShard

    s = PairedSampler(CONF, UNCONF, pairs_per_batch=2, seed=3, world_size=2)
    per_rank = []
    for rank in (0, 1):
        shard = BatchSamplerShard(BatchSampler(s, 4, drop_last=False), num_processes=2, process_index=rank)
        per_rank.append(list(shard))
    assert len(per_rank[0]) == len(per_rank[1])
    seen = Counter(i for rank in per_rank for b in rank for i in b)
    assert set(seen) == set(CONF + UNCONF) and set(seen.values()) == {1}  # no example twice across ranks
    all_pairs = {tuple(p) for p in s.pairs()}
    for rank in per_rank:
        for b in rank:
            assert {(b[0], b[2]), (b[1], b[3])} <= all_pairs  # pairs stay whole on one rank


# --- length-grouped batches -----------------------------------------------------------------------------------
def heavy_tailed(n: int, seed: int = 0):
    """Log-normal lengths (median 400, sigma 1: Tulu-like, p99 ~4000 before the cap at 2048) and a random split."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(400), 1.0, n), 8, 2048).astype(np.int64)
    confident = rng.random(n) < 0.5
    return lengths, np.flatnonzero(confident).tolist(), np.flatnonzero(~confident).tolist()


def test_old_order_is_unchanged_without_lengths():
    # Recorded from the sampler before length grouping existed: lengths=None (the flag off) keeps that stream.
    s = PairedSampler(list(range(6)), list(range(100, 109)), 2, seed=3, world_size=2)
    assert list(s) == [2, 3, 102, 101, 3, 0, 106, 104, 5, 4, 100, 107, 4, 1, 103, 105, 5, 5, 108, 100, 3, 4, 101, 103]
    s.set_epoch(1)
    assert list(s) == [0, 5, 103, 101, 5, 3, 104, 102, 0, 1, 108, 100, 4, 2, 105, 107, 2, 0, 106, 103, 5, 0, 104, 108]


@pytest.mark.parametrize("n_c,n_u,k,world", [(300, 300, 4, 1), (257, 410, 4, 2), (90, 31, 3, 4), (5, 9, 1, 1)])
def test_grouping_only_deals_the_same_pairs_into_other_batches(n_c, n_u, k, world):
    lengths = np.random.default_rng(1).integers(1, 3000, 1000)
    conf, unconf = list(range(n_c)), list(range(500, 500 + n_u))
    plain = PairedSampler(conf, unconf, k, seed=5, world_size=world)
    grouped = PairedSampler(conf, unconf, k, seed=5, world_size=world, lengths=lengths)
    assert len(grouped) == len(plain) and grouped.n_repeated == plain.n_repeated
    for epoch in (0, 1, 2):
        grouped.set_epoch(epoch)
        got = batches(grouped, 2 * k)
        assert len(got) == grouped.n_batches and len(got) % world == 0
        for b in got:
            assert all(i < 500 for i in b[:k]) and all(i >= 500 for i in b[k:])  # [confident..., unconfident...]
        drawn = Counter(map(tuple, plain.pairs(epoch).tolist()))  # today's pairs of that epoch
        assert Counter((b[i], b[k + i]) for b in got for i in range(k)) == drawn  # pair i = (row i, row k + i)
        assert set(i for b in got for i in b) == set(conf) | set(unconf)


def test_grouped_order_is_seeded_and_redrawn_each_epoch():
    lengths, conf, unconf = heavy_tailed(400)
    make = lambda seed: PairedSampler(conf, unconf, 4, seed=seed, lengths=lengths)  # noqa: E731
    s = make(1)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and set(e0) == set(e1) == set(conf) | set(unconf)
    assert list(make(1)) == e0 and list(make(2)) != e0
    assert list(make(1)) != list(PairedSampler(conf, unconf, 4, seed=1))  # grouping did reorder


def test_grouped_batches_pad_to_near_what_the_pairs_force():
    """One epoch of batch-8 batches on heavy-tailed lengths: the grouped order pads far less than the drawn one.

    The pairs are random, so each batch row is padded at least to its partner's length: the floor is
    2 * sum(max(len_c, len_u)) over the pairs, ~1.43 tokens per real token here (2 * Phi(sigma / sqrt 2) for
    independent log-normal lengths), whatever the batching. Grouping gets within a few percent of that floor."""
    lengths, conf, unconf = heavy_tailed(1200)
    plain = PairedSampler(conf, unconf, 4, seed=0)
    grouped = PairedSampler(conf, unconf, 4, seed=0, lengths=lengths)
    real, padded_plain = padding_ratio(plain.batches(), lengths)
    real_g, padded_grouped = padding_ratio(grouped.batches(), lengths)
    assert real == real_g  # the same pairs
    floor = 2 * lengths[plain.pairs()].max(axis=1).sum()
    today, now = padded_plain / real, padded_grouped / real
    assert today > 2.0  # what random batches cost
    assert now <= 1.05 * floor / real  # grouping's own padding: under 5% above the pairs' floor
    assert now <= 0.65 * today
    assert padded_grouped == sum(8 * lengths[b].max() for b in batches(grouped, 8))  # padding_ratio's arithmetic


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_grouped_batches_put_the_longest_step_first(seed):
    lengths, conf, unconf = heavy_tailed(1000, seed=seed)
    for world, acc in ((1, 1), (2, 1), (2, 3), (1, 4)):
        s = PairedSampler(conf, unconf, 4, seed=seed, world_size=world, accumulation=acc, lengths=lengths)
        per_batch = lengths[s.batches()].max(axis=(1, 2))
        assert per_batch[:world].max() == per_batch.max()  # the first micro-batch of the first step


@pytest.mark.parametrize("n_u", [300, 261])
def test_a_steps_pairs_depend_only_on_the_pairs_per_step(n_u):
    """Accumulating G micro-batches of B, or running W ranks, gives each optimizer step the pairs one batch of
    G * W * B gets: gradient accumulation and data parallelism train on the same steps as one big batch."""
    lengths, conf, unconf = heavy_tailed(1200, seed=4)
    conf, unconf = conf[:300], unconf[:n_u]  # 300 pairs: whole steps of 4 pairs in every setting below
    steps = []
    for k, world, acc in ((4, 1, 1), (2, 1, 2), (2, 2, 1), (1, 2, 2), (1, 1, 4)):
        s = PairedSampler(conf, unconf, k, seed=9, world_size=world, accumulation=acc, lengths=lengths)
        assert s.pairs_per_step == 4
        flat = s.batches(1).reshape(-1, 4, 2)  # world * acc consecutive batches make one step
        steps.append([sorted(map(tuple, step.tolist())) for step in flat])
    assert all(other == steps[0] for other in steps[1:])
    # Within a step, micro-batches of similar length: the longest pairs go in the first micro-batch.
    s = PairedSampler(conf, unconf, 1, seed=9, accumulation=4, lengths=lengths)
    per_pair = lengths[s.batches(1)].max(axis=(1, 2)).reshape(-1, 4)
    assert (np.diff(per_pair, axis=1) <= 0).all()


def test_grouped_data_parallel_ranks_get_whole_pairs_of_similar_length():
    from accelerate.data_loader import BatchSamplerShard

    lengths, conf, unconf = heavy_tailed(800, seed=2)
    conf, unconf = conf[:390], unconf[:390]
    s = PairedSampler(conf, unconf, 2, seed=3, world_size=2, lengths=lengths)
    per_rank = [
        list(BatchSamplerShard(BatchSampler(s, 4, drop_last=False), num_processes=2, process_index=rank))
        for rank in (0, 1)
    ]
    assert len(per_rank[0]) == len(per_rank[1]) == s.n_batches // 2
    seen = Counter(i for rank in per_rank for b in rank for i in b)
    assert set(seen) == set(conf + unconf)
    pairs = Counter(map(tuple, s.pairs().tolist()))
    assert Counter((b[i], b[2 + i]) for rank in per_rank for b in rank for i in range(2)) == pairs
    # Each step's two batches come from the same window, so the ranks wait little for each other.
    longest = [[lengths[b].max() for b in rank] for rank in per_rank]
    random_order = PairedSampler(conf, unconf, 2, seed=3, world_size=2).batches()
    random_longest = lengths[random_order].max(axis=(1, 2)).reshape(-1, 2)
    gap = np.abs(np.subtract(*longest)).mean()
    assert gap < 0.2 * np.abs(random_longest[:, 0] - random_longest[:, 1]).mean()


def test_lengths_of_a_selected_view_come_from_its_rows():
    from datasets import Dataset

    rng = np.random.default_rng(0)
    n = rng.integers(1, 40, 200)
    ds = Dataset.from_dict({"input_ids": [list(range(m)) for m in n], "confident": (np.arange(200) % 2 == 0).tolist()})
    pick = rng.permutation(200)[:120]
    for view, want in ((ds, n), (ds.select(pick), n[pick]), (ds.select(range(50, 90)), n[50:90])):
        assert example_lengths(view).tolist() == want.tolist()
    assert example_lengths(ds.select(pick).select([3, 1, 2])).tolist() == n[pick][[3, 1, 2]].tolist()


def test_the_trainers_sampler_follows_the_flag(tiny_llama, profile, tmp_path):  # noqa: F811
    from trainer_plugin.train import build_trainer

    kw = dict(per_device_train_batch_size=2, num_train_epochs=1)
    grouped = build_trainer(config(tiny_llama, profile[0], tmp_path / "g", **kw))
    plain = build_trainer(config(tiny_llama, profile[0], tmp_path / "p", group_by_length_pairs=False, **kw))
    sg, sp = grouped._get_train_sampler(), plain._get_train_sampler()
    lengths = example_lengths(grouped.train_dataset)
    assert sp.lengths is None and sg.lengths.tolist() == lengths.tolist()
    flags = grouped.train_dataset["confident"]
    old = PairedSampler(
        [i for i, f in enumerate(flags) if f], [i for i, f in enumerate(flags) if not f], 1, seed=grouped.args.seed
    )
    assert list(sp) == list(old)  # the flag off: today's order, exactly
    assert list(sg) != list(old) and sorted(map(tuple, sg.batches().reshape(-1, 2).tolist())) == sorted(
        map(tuple, old.pairs().tolist())
    )
    # The trainer's own dataloader: the sampler's batches, padded; padding is logged with the loss.
    loader = grouped.get_train_dataloader()
    rows = [lengths[b].tolist() for b in sg.batches()]
    assert [batch["attention_mask"].sum(1).tolist() for batch in loader] == [[r[0][0], r[0][1]] for r in rows]
    grouped.train()
    logs = [h for h in grouped.state.log_history if "loss" in h]
    real = [sum(r[0]) for r in rows]
    padded = [2 * max(r[0]) for r in rows]
    assert [h["tokens_real"] for h in logs] == real
    assert [h["tokens_padded"] for h in logs] == padded
    assert [h["padded_fraction"] for h in logs] == [round(1 - a / b, 4) for a, b in zip(real, padded)]


def test_killed_run_resumes_to_the_same_grouped_batches(tiny_llama, profile, tmp_path):  # noqa: F811
    from tests.trainer_plugin.test_train_args import Stop
    from trainer_plugin.train import build_trainer

    # 8 pairs a batch of 1 pair: 8 steps an epoch, 16 in all, grouped by length; killed mid-way through the 2nd epoch.
    kw = dict(per_device_train_batch_size=2, warmup_steps=0.25)
    whole = build_trainer(config(tiny_llama, profile[0], tmp_path / "whole", **kw))
    whole.train()
    kw.update(save_strategy="steps", save_steps=11)
    killed = build_trainer(config(tiny_llama, profile[0], tmp_path / "run", **kw), callbacks=[Stop(11)])
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = build_trainer(config(tiny_llama, profile[0], tmp_path / "run", resume_from_checkpoint="last", **kw))
    resumed.train(resume_from_checkpoint="last")
    assert resumed.state.global_step == 16

    def steps(trainer):
        logs = trainer.state.log_history
        return [(h["step"], h["tokens_real"], h["tokens_padded"], h["lam"]) for h in logs if "tokens_real" in h]

    want = [s for s in steps(whole) if s[0] > 11]
    assert [s for s in steps(resumed) if s[0] > 11] == want
    assert len(want) == 5 and len({s[1] for s in steps(whole)}) > 2  # batches of various lengths
    want_w = dict(whole.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        torch.testing.assert_close(p, want_w[name], atol=1e-6, rtol=0, msg=name)


def test_padding_free_trains_the_same_model_on_its_real_tokens(tiny_llama, profile, tmp_path):  # noqa: F811
    """`padding_free`: each step's forward holds only the batch's real tokens (logged: nothing padded), and the run
    learns what the padded one does; unset, it follows the attention kernel (off under sdpa)."""
    from trainer_plugin.train import build_trainer

    kw = dict(per_device_train_batch_size=4, num_train_epochs=1, warmup_steps=0)
    padded = build_trainer(config(tiny_llama, profile[0], tmp_path / "p", **kw))
    packed = build_trainer(config(tiny_llama, profile[0], tmp_path / "f", padding_free=True, **kw))
    assert padded.uses_padding_free(padded.model) is False  # sdpa: no gain, so not by default
    padded.train()
    packed.train()

    def logs(trainer):
        return [h for h in trainer.state.log_history if "loss" in h]

    assert all(h["tokens_padded"] == h["tokens_real"] and h["padded_fraction"] == 0 for h in logs(packed))
    assert any(h["padded_fraction"] > 0 for h in logs(padded))
    assert [h["tokens_real"] for h in logs(packed)] == [h["tokens_real"] for h in logs(padded)]
    for a, b in zip(logs(packed), logs(padded)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    want = dict(padded.model.named_parameters())
    for name, p in packed.model.named_parameters():
        torch.testing.assert_close(p, want[name], atol=1e-5, rtol=1e-4, msg=name)
