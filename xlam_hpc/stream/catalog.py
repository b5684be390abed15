"""The sources of a run (from one or more shard directories) and their global sample order.

`GlobalOrder.sample_at(position)` is the whole contract in one pure function: global position →
(source, source-local index), from (manifests, weights, seed, mixture block, shuffle window) alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xlam_hpc.config import fingerprint
from xlam_hpc.errors import ConfigError
from xlam_hpc.shard import Manifest, ShardReader, load_manifest
from xlam_hpc.shard.reader import DEFAULT_INDEX_CACHE_BYTES
from xlam_hpc.stream.mixture import MixturePlan, normalize_weights
from xlam_hpc.stream.order import SourceOrder

__all__ = ["Catalog", "GlobalOrder", "open_catalog"]


@dataclass
class Catalog:
    """Readable sources of the given shard directories."""

    manifests: list[Manifest]
    readers: dict[str, ShardReader]
    """source → the reader of its directory."""
    kinds: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: r.sources.get(name, 0) for name, r in self.readers.items()}

    def shard_sizes(self, source: str) -> tuple[int, ...]:
        return self.readers[source].shard_sizes(source)


def open_catalog(
    directories: list[str],
    *,
    skip_bad_shards: bool = False,
    index_cache_bytes: int = DEFAULT_INDEX_CACHE_BYTES,
    max_open_files: int | None = None,
) -> Catalog:
    """Load manifests, check that source names are unique, open one reader per directory (each with its
    own member-index cache and open-file cap)."""
    manifests, readers, kinds, skipped = [], {}, {}, []
    for d in directories:
        m = load_manifest(d)
        reader = ShardReader(
            m, skip_bad_shards=skip_bad_shards, index_cache_bytes=index_cache_bytes, max_open_files=max_open_files
        )
        skipped += reader.skipped
        manifests.append(m)
        for name, info in m.sources.items():
            if name in readers:
                raise ConfigError(f"source '{name}' appears in two shard directories ({d} and an earlier one)")
            readers[name] = reader
            kinds[name] = info["kind"]
    return Catalog(manifests, readers, kinds, skipped)


@dataclass(frozen=True)
class GlobalOrder:
    """Global position → (source name, source-local index)."""

    plan: MixturePlan
    orders: tuple[SourceOrder, ...]
    manifest_fingerprints: tuple[str, ...]

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        weights: dict[str, float],
        seed: int,
        block: int,
        window_shards: int,
        *,
        weights_default: float | None = None,
    ) -> GlobalOrder:
        normalized = normalize_weights(weights, catalog.sizes, weights_default)
        names = tuple(normalized)
        plan = MixturePlan(names, tuple(normalized[n] for n in names), block, seed)
        orders = tuple(SourceOrder(n, catalog.shard_sizes(n), seed, window_shards) for n in names)
        fps = tuple(sorted(m.fingerprint for m in catalog.manifests)) + tuple(sorted(catalog.skipped))
        return cls(plan, orders, fps)

    @property
    def names(self) -> tuple[str, ...]:
        return self.plan.names

    def sample_at(self, position: int) -> tuple[str, int]:
        s, draw = self.plan.locate(position)
        return self.plan.names[s], self.orders[s].local_index(draw)

    def fingerprint(self) -> str:
        """Identity of the sample stream: manifests (+ skipped shards), weights, seed, block, window."""
        return fingerprint(
            {
                "manifests": self.manifest_fingerprints,
                "weights": dict(zip(self.plan.names, self.plan.weights, strict=True)),
                "seed": self.plan.seed,
                "block": self.plan.block,
                "window": self.orders[0].window_shards if self.orders else 0,
            }
        )
