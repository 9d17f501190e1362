"""PairedSampler: balance, pairing, coverage, determinism, and data-parallel sharding."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import BatchSampler

from trainer_plugin.sampler import PairedSampler

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
