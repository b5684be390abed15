"""The validation split: which trajectories are held out of training, and which samples are validated on.

`held_out` is a pure function of (trajectory id, fraction, split seed): the same trajectory is held out in
every run, on every rank, after every resume and whatever the shard layout, so validation never overlaps
the training stream. The training stream keeps its global positions (the mixture and resume stay exact); a
held-out trajectory drawn there is skipped and counted (`held_out` in the loader stats).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from xlam_hpc.shard import ShardReader
from xlam_hpc.stream.catalog import Catalog, open_catalog
from xlam_hpc.stream.config import EvalSplitConfig

__all__ = ["HoldOut", "held_out", "validation_samples"]


def held_out(trajectory_id: str, fraction: float, seed: int) -> bool:
    """Is this trajectory in the validation split? (blake2b: stable across platforms and Python versions)"""
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"{seed}\0{trajectory_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


class _Id(msgspec.Struct):
    unique_trajectory_id: str


_decode_id = msgspec.json.Decoder(_Id).decode


@dataclass(frozen=True)
class HoldOut:
    """The split as the training stream applies it."""

    fraction: float
    seed: int

    def trajectory_id(self, reader: ShardReader, source: str, index: int) -> str:
        """The id from the record's JSON member alone (pre-tokenized sources are not decoded otherwise)."""
        return _decode_id(reader.read_member(source, index, "json")).unique_trajectory_id

    def excludes(self, trajectory_id: str) -> bool:
        return held_out(trajectory_id, self.fraction, self.seed)


def validation_samples(
    cfg: EvalSplitConfig, train: Catalog, names: tuple[str, ...], **reader_options: object
) -> tuple[dict[str, list[tuple[Catalog, int]]], Catalog | None]:
    """Validation samples per source name: (catalog, index) pairs, at most cfg.max_samples each, in index
    order. From the held-out shards (every source) and, with a fraction, from each training source in
    `names` (its held-out trajectories, found by reading ids in index order until max_samples)."""
    out: dict[str, list[tuple[Catalog, int]]] = {}
    split = HoldOut(cfg.fraction, cfg.seed)
    if cfg.fraction > 0:
        for name in names:
            reader, found = train.readers[name], []
            for index in range(train.sizes[name]):
                if split.excludes(split.trajectory_id(reader, name, index)):
                    found.append((train, index))
                    if len(found) == cfg.max_samples:
                        break
            if found:
                out[name] = found
    held: Catalog | None = None
    if cfg.shards:
        held = open_catalog(cfg.shards, **reader_options)  # type: ignore[arg-type]
        for name, size in held.sizes.items():
            out.setdefault(name, []).extend((held, i) for i in range(min(size, cfg.max_samples)))
    return out, held
