"""Order inside one source: draw number → source-local sample index. Pure, seeded, O(1) per lookup.

Draw j of a source of n samples is sample j % n of that source's epoch j // n (each epoch is a fresh
permutation: per-source repeat when a small source is exhausted). Within an epoch we shuffle the
shard order, group consecutive shards into windows of `window_shards`, and permute the samples of
each window (like MosaicML streaming's block shuffles): reads stay within a few shards at a time,
and no lookup ever needs more than one shard list and one window permutation — never a replay.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from xlam_hpc.stream.seeding import generator

__all__ = ["SourceOrder"]


@dataclass(frozen=True)
class SourceOrder:
    """Seeded order of one source's samples across epochs."""

    name: str
    shard_sizes: tuple[int, ...]
    """Samples per shard, in manifest order (source-local indices run through them in that order)."""
    seed: int
    window_shards: int = 4

    @cached_property
    def num_samples(self) -> int:
        return sum(self.shard_sizes)

    def local_index(self, draw: int) -> int:
        """Source-local sample index of the `draw`-th sample taken from this source."""
        epoch, i = divmod(draw, self.num_samples)
        layout = _epoch_layout(self, epoch)
        w = bisect.bisect_right(layout.window_starts, i) - 1
        p = int(_window_perm(self, epoch, w)[i - layout.window_starts[w]])
        ends = layout.shard_ends[w]
        k = bisect.bisect_right(ends, p)
        return layout.shard_firsts[w][k] + p - (ends[k - 1] if k else 0)


@dataclass(frozen=True)
class _Layout:
    """One epoch's shard order, cut into windows (plain lists: bisect on them beats numpy per lookup)."""

    window_starts: list[int]
    """Epoch position of each window's first sample."""
    shard_ends: list[list[int]]
    """Per window: cumulative sample counts of its shards, in shuffled order."""
    shard_firsts: list[list[int]]
    """Per window: source-local index of each of its shards' first sample."""


@lru_cache(maxsize=256)
def _epoch_layout(order: SourceOrder, epoch: int) -> _Layout:
    sizes = np.asarray(order.shard_sizes, dtype=np.int64)
    perm = generator(order.seed, "shards", order.name, epoch).permutation(len(sizes))
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    windows = [perm[k : k + order.window_shards] for k in range(0, len(sizes), order.window_shards)]
    window_sizes = [int(sizes[w].sum()) for w in windows]
    return _Layout(
        window_starts=[0, *np.cumsum(window_sizes)[:-1].tolist()],
        shard_ends=[np.cumsum(sizes[w]).tolist() for w in windows],
        shard_firsts=[firsts[w].tolist() for w in windows],
    )


@lru_cache(maxsize=256)  # ≥ one live window per source of a large mixture (a perm of 1k samples is 8 KB)
def _window_perm(order: SourceOrder, epoch: int, window: int) -> np.ndarray:
    layout = _epoch_layout(order, epoch)
    size = layout.shard_ends[window][-1]
    return generator(order.seed, "window", order.name, epoch, window).permutation(size)
