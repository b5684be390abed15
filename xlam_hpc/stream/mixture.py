"""Exact source mixture: global position → (source, how many samples of that source came before).

Pure functions of (weights, block size, seed). Positions are cut into blocks of `block` samples.
Block k gives source s a quota of floor(w_s·block) or ceil(w_s·block) samples — so every block is
within ±1 of weight×block — and the `extras` (the ceil roundings, R = block − Σ floor per block) go
to the sources with the largest accumulated deficit, Megatron-style greedy largest-error, at most
one extra per source per block. That greedy runs once over a fixed period of blocks at start-up;
the table repeats afterwards, so the quota of block 10⁹ is an O(1) lookup. The greedy keeps each
source's accumulated error below 2 samples (property-tested), so long-run shares are exact to
2/(period·block). Inside a block, the order of sources is a seeded permutation of the quota
multiset. Hand-written because neither webdataset nor torchdata has deterministic quota mixing
(their mixers sample sources at random).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from xlam_hpc.errors import ConfigError
from xlam_hpc.stream.seeding import generator

__all__ = ["MixturePlan", "block_quotas", "normalize_weights"]

DEFAULT_PERIOD = 1024


def normalize_weights(
    weights: Mapping[str, float], sizes: Mapping[str, int], default: float | None = None
) -> dict[str, float]:
    """Validated weights summing to 1, in sorted source order. Empty `weights` = proportional to size.

    `weights` naming only some sources: the others get `default` (`data.weights_default`; 0 leaves them
    out), and without a default that is an error listing them, so a forgotten source is never silently dropped.

    Errors (ConfigError): unknown source, negative/NaN/inf weight, all zero, a weighted source with
    no samples, unlisted sources without a default.
    """
    if not sizes:
        raise ConfigError("no source with samples in the given shard directories")
    if default is not None and (not isinstance(default, int | float) or not math.isfinite(default) or default < 0):
        raise ConfigError(f"data.weights_default must be a finite number >= 0, got {default!r}")
    if not weights:
        weights = {name: float(n) for name, n in sizes.items()}
    unknown = sorted(name for name in weights if name not in sizes)
    if unknown:
        raise ConfigError(f"weight given for unknown source '{unknown[0]}' (sources: {sorted(sizes)})")
    for name, w in weights.items():
        if not isinstance(w, int | float) or math.isnan(w) or math.isinf(w):
            raise ConfigError(f"weight of source '{name}' must be a finite number, got {w!r}")
        if w < 0:
            raise ConfigError(f"weight of source '{name}' is negative ({w})")
        if w > 0 and sizes[name] == 0:
            raise ConfigError(f"source '{name}' has weight {w} but no samples")
    unlisted = sorted(name for name, n in sizes.items() if name not in weights and n > 0)  # empty ones lose nothing
    if unlisted:
        if default is None:
            raise ConfigError(
                f"data.weights names {len(weights)} of the {len(sizes)} sources; unlisted: {', '.join(unlisted)}. "
                "Give them a weight, or set data.weights_default: 0 to leave them out"
            )
        weights = {**weights, **{name: float(default) for name in unlisted}}
    total = float(sum(weights.values()))
    if total <= 0:
        raise ConfigError(f"all mixture weights are zero: {dict(weights)}")
    return {name: weights[name] / total for name in sorted(weights) if weights[name] > 0}


def block_quotas(weights: np.ndarray, block: int, period: int = DEFAULT_PERIOD) -> np.ndarray:
    """[period, S] int64 per-block sample counts; each row sums to `block`, each entry floor/ceil of w·block."""
    target = weights * block
    base = np.floor(target).astype(np.int64)
    frac = target - base
    extras = block - int(base.sum())
    quotas = np.tile(base, (period, 1))
    if extras == 0:
        return quotas
    given = np.zeros(len(weights), dtype=np.float64)
    order_key = np.arange(len(weights))
    for k in range(period):
        deficit = frac * (k + 1) - given
        # largest deficit first; ties by source order, so the table is deterministic
        chosen = np.lexsort((order_key, -deficit))[:extras]
        quotas[k, chosen] += 1
        given[chosen] += 1
    return quotas


_BLOCKS = 64


@dataclass(frozen=True, eq=False)
class MixturePlan:
    """Position → (source id, draw number within that source). Immutable; cheap to share with workers.
    Compared and hashed by identity; block layouts are cached on the instance."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    block: int
    seed: int
    period: int = DEFAULT_PERIOD

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ConfigError(f"mixture block must be >= 1, got {self.block}")
        quotas = block_quotas(np.asarray(self.weights, dtype=np.float64), self.block, self.period)
        prefix = np.vstack([np.zeros((1, len(self.names)), np.int64), np.cumsum(quotas, axis=0)])
        object.__setattr__(self, "_quotas", quotas)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_layouts", OrderedDict())

    def quota(self, block_idx: int) -> np.ndarray:
        """Per-source sample counts of block `block_idx`."""
        return self._quotas[block_idx % self.period]

    def drawn_before(self, block_idx: int) -> np.ndarray:
        """Per-source number of samples in all blocks before `block_idx` (O(1))."""
        cycles, rest = divmod(block_idx, self.period)
        return cycles * self._prefix[self.period] + self._prefix[rest]

    def drawn_until(self, position: int) -> np.ndarray:
        """Per-source number of samples at global positions [0, position): the realized mixture so far."""
        k, offset = divmod(position, self.block)
        counts = self.drawn_before(k)
        if offset:
            counts = counts + np.bincount(self._lists(k)[0][:offset], minlength=len(self.names))
        return counts

    def block_layout(self, block_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(source id, draw number) of every position of one block."""
        src, draw = self._lists(block_idx)
        return np.asarray(src, dtype=np.int64), np.asarray(draw, dtype=np.int64)

    def locate(self, position: int) -> tuple[int, int]:
        """(source id, draw number) of one global position."""
        k, offset = divmod(position, self.block)
        src, draw = self._layouts.get(k) or self._lists(k)
        return src[offset], draw[offset]

    def _lists(self, block_idx: int) -> tuple[list[int], list[int]]:
        got = self._layouts.get(block_idx)
        if got is None:
            src, draw = _block_layout(self, block_idx)
            got = src.tolist(), draw.tolist()
            if len(self._layouts) >= _BLOCKS:
                self._layouts.popitem(last=False)
            self._layouts[block_idx] = got
        return got


def _block_layout(plan: MixturePlan, block_idx: int) -> tuple[np.ndarray, np.ndarray]:
    quota = plan.quota(block_idx)
    sources = np.repeat(np.arange(len(plan.names)), quota)
    sources = sources[generator(plan.seed, "mixture", block_idx).permutation(len(sources))]
    # draw number = samples of the same source in earlier blocks + earlier in this block
    draws = plan.drawn_before(block_idx)[sources].copy()
    for s in range(len(plan.names)):
        mask = sources == s
        draws[mask] += np.arange(int(mask.sum()))
    return sources, draws
