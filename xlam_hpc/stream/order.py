"""Order inside one source: draw number → source-local sample index. Pure, seeded, O(1) per lookup.

Draw j of a source of n samples is sample j % n of that source's epoch j // n (each epoch is a fresh
permutation: per-source repeat when a small source is exhausted). Within an epoch we shuffle the
shard order, group consecutive shards into windows of `window_shards`, and permute the samples of
each window (like MosaicML streaming's block shuffles): reads stay within a few shards at a time,
and no lookup ever needs more than one shard list and one window permutation — never a replay.

Lookups cost the same with 100 or 100k shards: the caches live on the instance (a dict lookup on an
int), never keyed by the shard-size tuple, whose hash alone is O(shards).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from xlam_hpc.stream.seeding import generator

__all__ = ["SourceOrder"]

_LAYOUTS = 2  # epochs kept: the current one and its neighbour (a step may straddle an epoch boundary)
_PERM_ENTRIES = 1 << 20  # cached window permutation entries per source (~40 MB as Python lists), ≥ 1 window


@dataclass(frozen=True, eq=False)
class SourceOrder:
    """Seeded order of one source's samples across epochs (compared and hashed by identity)."""

    name: str
    shard_sizes: tuple[int, ...]
    """Samples per shard, in manifest order (source-local indices run through them in that order)."""
    seed: int
    window_shards: int = 4
    num_samples: int = field(init=False, repr=False)
    _layouts: dict[int, _Layout] = field(init=False, repr=False, default_factory=dict)
    _perms: OrderedDict[tuple[int, int], list[int]] = field(init=False, repr=False, default_factory=OrderedDict)
    _last: list = field(init=False, repr=False, default_factory=lambda: [-1, 0, 0, None, None])
    """(epoch, first, end, window, layout) of the window the last lookup hit: consecutive draws skip the bisect."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_samples", sum(self.shard_sizes))

    def local_index(self, draw: int) -> int:
        """Source-local sample index of the `draw`-th sample taken from this source."""
        epoch, i = divmod(draw, self.num_samples)
        last = self._last
        if last[0] == epoch and last[1] <= i < last[2]:
            w, layout = last[3], last[4]
        else:
            layout = self._layouts.get(epoch) or self._layout(epoch)
            w = bisect.bisect_right(layout.window_starts, i) - 1
            last[:] = epoch, layout.window_starts[w], self._window_end(layout, w), w, layout
        perm = self._perms.get((epoch, w)) or self._window_perm(epoch, w, layout)
        q = layout.window_starts[w] + perm[i - layout.window_starts[w]]  # epoch position after the shuffle
        lo = w * self.window_shards
        k = bisect.bisect_right(layout.shard_ends, q, lo, min(lo + self.window_shards, len(layout.shard_ends)))
        return layout.shard_firsts[k] + q - layout.shard_starts[k]

    def _layout(self, epoch: int) -> _Layout:
        sizes = np.asarray(self.shard_sizes, dtype=np.int64)
        perm = generator(self.seed, "shards", self.name, epoch).permutation(len(sizes))
        firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        ends = np.cumsum(sizes[perm])
        starts = ends - sizes[perm]
        layout = _Layout(
            window_starts=starts[:: self.window_shards].tolist(),
            shard_starts=starts.tolist(),
            shard_ends=ends.tolist(),
            shard_firsts=firsts[perm].tolist(),
        )
        if len(self._layouts) >= _LAYOUTS:
            self._layouts.pop(next(iter(self._layouts)))
        self._layouts[epoch] = layout
        return layout

    def _window_perm(self, epoch: int, window: int, layout: _Layout) -> list[int]:
        size = self._window_end(layout, window) - layout.window_starts[window]
        perm = generator(self.seed, "window", self.name, epoch, window).permutation(size).tolist()
        held = sum(map(len, self._perms.values()))  # a few hundred windows at most: cheap next to the permutation
        while self._perms and held + len(perm) > _PERM_ENTRIES:
            held -= len(self._perms.popitem(last=False)[1])
        self._perms[(epoch, window)] = perm
        return perm

    @staticmethod
    def _window_end(layout: _Layout, window: int) -> int:
        starts = layout.window_starts
        return starts[window + 1] if window + 1 < len(starts) else layout.shard_ends[-1]


@dataclass(frozen=True)
class _Layout:
    """One epoch's shard order (plain lists: bisect on them beats numpy per lookup). Shuffled shard k
    covers epoch positions [shard_starts[k], shard_ends[k]); window w holds shuffled shards
    [w·window_shards, (w+1)·window_shards)."""

    window_starts: list[int]
    """Epoch position of each window's first sample."""
    shard_starts: list[int]
    shard_ends: list[int]
    shard_firsts: list[int]
    """Source-local index of each shuffled shard's first sample."""
