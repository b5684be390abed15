"""The O(1) lookups give bit for bit the outputs of the original lru_cache implementation (kept here)."""

from __future__ import annotations

import bisect

import numpy as np
import pytest

from xlam_hpc.stream import MixturePlan, SourceOrder
from xlam_hpc.stream.seeding import generator


def _reference_local_index(name: str, sizes: tuple[int, ...], seed: int, window: int, draw: int) -> int:
    """The pre-O(1) SourceOrder.local_index, uncached."""
    n = sum(sizes)
    epoch, i = divmod(draw, n)
    arr = np.asarray(sizes, dtype=np.int64)
    perm = generator(seed, "shards", name, epoch).permutation(len(arr))
    firsts = np.concatenate([[0], np.cumsum(arr)[:-1]])
    windows = [perm[k : k + window] for k in range(0, len(arr), window)]
    window_sizes = [int(arr[w].sum()) for w in windows]
    window_starts = [0, *np.cumsum(window_sizes)[:-1].tolist()]
    shard_ends = [np.cumsum(arr[w]).tolist() for w in windows]
    shard_firsts = [firsts[w].tolist() for w in windows]
    w = bisect.bisect_right(window_starts, i) - 1
    wperm = generator(seed, "window", name, epoch, w).permutation(shard_ends[w][-1])
    p = int(wperm[i - window_starts[w]])
    ends = shard_ends[w]
    k = bisect.bisect_right(ends, p)
    return shard_firsts[w][k] + p - (ends[k - 1] if k else 0)


def _reference_locate(plan: MixturePlan, position: int) -> tuple[int, int]:
    """The pre-O(1) MixturePlan.locate, uncached."""
    block_idx, offset = divmod(position, plan.block)
    quota = plan.quota(block_idx)
    sources = np.repeat(np.arange(len(plan.names)), quota)
    sources = sources[generator(plan.seed, "mixture", block_idx).permutation(len(sources))]
    draws = plan.drawn_before(block_idx)[sources].copy()
    for s in range(len(plan.names)):
        mask = sources == s
        draws[mask] += np.arange(int(mask.sum()))
    return int(sources[offset]), int(draws[offset])


@pytest.mark.parametrize(
    ("sizes", "seed", "window"),
    [
        ((10,) * 12, 3, 2),
        ((7, 1, 13, 5, 2, 9, 30), 0, 4),
        ((1,), 9, 4),
        ((5, 0, 6, 0, 3), 17, 2),  # empty shards
        (tuple(range(1, 40)), 123456, 3),
    ],
)
def test_source_order_matches_the_reference(sizes, seed, window):
    order = SourceOrder("src", sizes, seed, window)
    n = order.num_samples
    draws = [*range(3 * n), 10**6 + 7, 10**9 + 11, *range(5 * n, 5 * n + n)]
    rng = np.random.default_rng(seed)
    draws += rng.integers(0, 10**7, 200).tolist()  # random access, epochs out of order
    assert [order.local_index(d) for d in draws] == [
        _reference_local_index("src", sizes, seed, window, d) for d in draws
    ]


@pytest.mark.parametrize(
    ("weights", "block", "seed"),
    [((0.5, 0.3, 0.2), 10, 11), ((0.9, 0.05, 0.05), 20, 3), ((1.0,), 8, 0), ((0.1, 0.2, 0.3, 0.4), 7, 99)],
)
def test_mixture_plan_matches_the_reference(weights, block, seed):
    names = tuple(f"s{i}" for i in range(len(weights)))
    plan = MixturePlan(names, weights, block, seed)
    positions = [*range(block * 80), 10**6 + 3, 10**9 + 5, *np.random.default_rng(1).integers(0, 10**8, 100).tolist()]
    assert [plan.locate(p) for p in positions] == [_reference_locate(plan, p) for p in positions]
    assert all(isinstance(x, int) for p in positions[:50] for x in plan.locate(p))


def test_orders_hash_by_identity_in_constant_time():
    big = SourceOrder("big", (1000,) * 100_000, 0)
    assert {big: 1}[big] == 1
    assert big != SourceOrder("big", (1000,) * 100_000, 0)  # identity: no O(shards) tuple comparison
