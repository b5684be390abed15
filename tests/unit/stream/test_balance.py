"""Token balance: each step's samples are cut over the ranks by estimated tokens, as a pure function of
(the step's positions, their costs, world size); the global stream and its mixture are unchanged."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import SOURCES, make_record, write_jsonl
from xlam_hpc.collate import CollateConfig
from xlam_hpc.collate.pretokenize import write_tokenized_shards
from xlam_hpc.shard import ShardConfig
from xlam_hpc.stream import StreamConfig, build_loader
from xlam_hpc.stream.partition import balance_by_cost, step_positions

WEIGHTS = {"alpha": 0.5, "beta": 0.3, "gamma": 0.2}


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10**9),
    st.lists(st.integers(0, 5000), min_size=1, max_size=80),
    st.integers(1, 9),
)
def test_lpt_is_a_balanced_partition_of_the_step(start, costs, world):
    positions = range(start, start + len(costs))
    got = balance_by_cost(positions, costs, world)
    assert got == balance_by_cost(list(positions), list(costs), world)  # deterministic
    assert len(got) == world
    assert sorted(p for r in got for p in r) == list(positions)  # a partition
    assert all(r == sorted(r) for r in got)  # position order within a rank
    if len(costs) >= world:
        assert all(got)  # every rank gets a sample
    cost = {p: max(c, 1) for p, c in zip(positions, costs, strict=True)}
    loads = [sum(cost[p] for p in r) for r in got]
    assert max(loads) <= sum(loads) / world + max(cost.values())  # the LPT bound


def test_lpt_order_and_ties():
    # costs descending, ties by position; least-loaded rank, ties by rank id
    assert balance_by_cost(range(10, 14), [5, 5, 5, 5], 2) == [[10, 12], [11, 13]]
    assert balance_by_cost(range(4), [1, 9, 3, 3], 2) == [[1], [0, 2, 3]]
    assert balance_by_cost(range(3), [0, 0, 0], 3) == [[0], [1], [2]]  # zero costs count as 1


def _cfg(shard_dir, **kw):
    base = {"shards": [str(shard_dir / n) for n in SOURCES], "weights": WEIGHTS, "global_batch_size": 20}
    return StreamConfig(**{**base, **kw})


def _collate():
    return CollateConfig(seq_length=1024, chat_template="builtin")


def _loaders(shard_dir, tokenizer, world, **kw):
    return [
        build_loader(_cfg(shard_dir, **kw), _collate(), tokenizer, rank=r, world_size=world, seed=11)
        for r in range(world)
    ]


def test_four_ranks_get_their_assigned_samples_and_cover_each_step(shard_dir, tokenizer):
    loaders = _loaders(shard_dir, tokenizer, 4)
    order, cost = loaders[0].order, loaders[0].cost
    assert cost is not None and cost.stored == frozenset()
    for step in range(8):
        batches = [next(ld) for ld in loaders]
        positions = step_positions(0, step, 20)
        ids = [order.sample_at(p) for p in positions]
        expected = balance_by_cost(positions, [cost.cost(s, i) for s, i in ids], 4)
        for r, b in enumerate(batches):
            assert b["positions"] == expected[r] and b["rank"] == r
            assert b["drawn_ids"] == [f"{s}:{i}" for s, i in (order.sample_at(p) for p in expected[r])]
            assert b["drawn_ids"]  # no rank is left without a sample
        assert sorted(p for b in batches for p in b["positions"]) == list(positions)
        assert Counter(i for b in batches for i in b["drawn_ids"]) == Counter(f"{s}:{i}" for s, i in ids)


def test_tokens_are_more_even_than_contiguous_slices(shard_dir, tokenizer):
    def spread(balance):
        loaders = _loaders(shard_dir, tokenizer, 4, balance=balance)
        total = 0
        for _ in range(10):
            total += max(next(ld)["num_tokens"] for ld in loaders)
        return total

    assert spread("tokens") < spread("samples")


def test_resume_mid_stream_gives_the_same_per_rank_batches(shard_dir, tokenizer):
    full = [[next(ld)["drawn_ids"] for _ in range(9)] for ld in _loaders(shard_dir, tokenizer, 4)]
    first = _loaders(shard_dir, tokenizer, 4)
    for ld in first:
        for _ in range(4):
            next(ld)
    state = json.loads(json.dumps(first[2].state_dict()))
    second = _loaders(shard_dir, tokenizer, 4, num_workers=0)
    for r, ld in enumerate(second):
        ld.load_state_dict(state)
        assert [next(ld)["drawn_ids"] for _ in range(5)] == full[r][4:]


def test_realized_mixture_is_unchanged(shard_dir, tokenizer):
    def counts(balance, world):
        c = Counter()
        for ld in _loaders(shard_dir, tokenizer, world, balance=balance):
            for _ in range(12):
                c.update(i.split(":")[0] for i in next(ld)["drawn_ids"])
        return c

    single = counts("samples", 1)
    assert counts("tokens", 4) == single == counts("samples", 4)
    assert single == {"alpha": 120, "beta": 72, "gamma": 48}  # 240 samples at 0.5 / 0.3 / 0.2


def test_balance_does_not_enter_the_stream_fingerprint(shard_dir, tokenizer):
    a, b = (_loaders(shard_dir, tokenizer, 2, balance=x)[0] for x in ("tokens", "samples"))
    assert a.fingerprint == b.fingerprint and b.cost is None
    with pytest.raises(ValueError, match="balance"):
        _cfg(shard_dir, balance="rows")


def test_pretokenized_cost_is_the_stored_token_count(tmp_path, tokenizer):
    rows = [make_record(i, "tok", turns=1 + i % 5) for i in range(24)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    collate = CollateConfig(seq_length=512, chat_template="builtin")
    stored = tmp_path / "stored"
    write_tokenized_shards(
        ShardConfig(inputs=[str(src)], output_dir=str(stored), samples_per_shard=5, progress=False),
        tokenizer="mistral-v3",
        collate=collate,
    )
    cfg = StreamConfig(shards=[str(stored)], global_batch_size=8)
    loaders = [build_loader(cfg, collate, tokenizer, rank=r, world_size=2, seed=1) for r in range(2)]
    cost = loaders[0].cost
    assert cost.stored == {"tok"} and cost.ratios == {}
    for _ in range(3):
        for ld in loaders:
            b = next(ld)
            ids = [tuple(x.split(":")) for x in b["drawn_ids"]]
            assert b["num_tokens"] == sum(min(cost.cost(s, int(i)), 512) for s, i in ids)


def test_reader_limits_reach_the_readers(shard_dir, tokenizer):
    loader = _loaders(shard_dir, tokenizer, 1, index_cache_mb=3, max_open_files=2)[0]
    for reader in loader.catalog.readers.values():
        assert reader.index_cache_bytes == 3 << 20 and reader.max_open_files == 2
    assert _loaders(shard_dir, tokenizer, 1)[0].fingerprint == loader.fingerprint
    with pytest.raises(ValueError, match="max_open_files"):
        _cfg(shard_dir, max_open_files=0)


def test_dpo_pairs_are_balanced_and_cover_each_step(train_data, tokenizer):
    cfg = StreamConfig(shards=[str(train_data["dpo"])], global_batch_size=8)
    loaders = [build_loader(cfg, _collate(), tokenizer, rank=r, world_size=4, seed=2, task="dpo") for r in range(4)]
    assert loaders[0].cost.cap == 0 and all(per > 0 for per, _ in loaders[0].cost.ratios.values())
    for step in range(3):
        batches = [next(ld) for ld in loaders]
        assert all(b["positions"] for b in batches)
        assert sorted(p for b in batches for p in b["positions"]) == list(step_positions(0, step, 8))
