"""Order inside one source: draw number → source-local sample index. Pure, seeded, O(1) per lookup.

Draw j of a source of n samples is sample j % n of that source's epoch j // n (each epoch is a fresh
permutation: per-source repeat when a small source is exhausted). Within an epoch we shuffle the
shard order, group consecutive shards into windows of `window_shards`, and permute the samples of
each window (like MosaicML streaming's block shuffles): reads stay within a few shards at a time,
and no lookup ever needs more than one shard list and one window permutation — never a replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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

    @property
    def num_samples(self) -> int:
        return sum(self.shard_sizes)

    def local_index(self, draw: int) -> int:
        """Source-local sample index of the `draw`-th sample taken from this source."""
        epoch, i = divmod(draw, self.num_samples)
        shard_perm, window_starts, firsts = _epoch_layout(self, epoch)
        w = int(np.searchsorted(window_starts, i, side="right")) - 1
        p = int(_window_perm(self, epoch, w)[i - window_starts[w]])
        shards = shard_perm[w * self.window_shards : (w + 1) * self.window_shards]
        sizes = np.asarray(self.shard_sizes)[shards]
        k = int(np.searchsorted(np.cumsum(sizes), p, side="right"))
        return int(firsts[shards[k]] + p - (sizes[:k].sum() if k else 0))


@lru_cache(maxsize=32)
def _epoch_layout(order: SourceOrder, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = np.asarray(order.shard_sizes, dtype=np.int64)
    perm = generator(order.seed, "shards", order.name, epoch).permutation(len(sizes))
    window_sizes = np.add.reduceat(sizes[perm], np.arange(0, len(sizes), order.window_shards))
    window_starts = np.concatenate([[0], np.cumsum(window_sizes)[:-1]])
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return perm, window_starts, firsts


@lru_cache(maxsize=16)
def _window_perm(order: SourceOrder, epoch: int, window: int) -> np.ndarray:
    _, window_starts, _ = _epoch_layout(order, epoch)
    end = window_starts[window + 1] if window + 1 < len(window_starts) else order.num_samples
    size = int(end - window_starts[window])
    return generator(order.seed, "window", order.name, epoch, window).permutation(size)
