"""Estimated tokens of one sample, for balancing a step over the ranks ("tokens" balance).

Every rank must compute the same cost for every sample of the step, cheaply and without tokenizing
other ranks' samples, so a cost comes from the member index alone (no sample data is read):
- pre-tokenized sources (shards encoded with this run's render fingerprint): the stored ids' bytes / 4;
- other sources: the JSON member's bytes × that source's tokens-per-byte, measured once at build time
  on its first records with the run's encoder (deterministic, hence equal on every rank).
Integer arithmetic throughout: a float ratio could round differently nowhere, but ints cannot at all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from xlam_hpc.collate import SampleEncoder
from xlam_hpc.shard import ShardReader
from xlam_hpc.stream.catalog import Catalog

__all__ = ["CostModel", "measure_ratios", "member_size"]

_ID_BYTES = 4  # stored token ids are int32
_FALLBACK = (1, 4)  # tokens per byte when no measured record gave a token


def member_size(reader: ShardReader, source: str, index: int, member: str) -> int:
    """Byte size of one member of one sample, from the member index."""
    # TODO(shard): drop the fallback once ShardReader.member_size has landed
    if hasattr(reader, "member_size"):
        return reader.member_size(source, index, member)
    info, row = reader._locate(source, index)
    stride = getattr(reader, "_stride", 2)  # index columns per member: (offset, size[, crc32])
    return int(reader._shard_index(info)[row, stride * reader._members[member] + 1])


def measure_ratios(
    catalog: Catalog, encoder: SampleEncoder, names: tuple[str, ...], task: str, records: int = 16
) -> dict[str, tuple[int, int]]:
    """source → (tokens, JSON bytes) of its first `records` records, encoded with the run's encoder."""
    stats, examples = Counter(encoder.stats), list(encoder.reject_examples)
    out = {}
    for name in names:
        reader = catalog.readers[name]
        tokens = size = 0
        for index in range(min(records, catalog.sizes[name])):
            rec = reader.record(name, index)
            size += member_size(reader, name, index, "json")
            if task == "dpo":
                tokens += sum(len(p.chosen) + len(p.rejected) for p in encoder.encode_dpo([(f"{name}:{index}", rec)]))
            else:
                tokens += sum(len(s) for s in encoder.encode_sft([(f"{name}:{index}", rec)]))
        out[name] = (tokens, size) if tokens and size else _FALLBACK
    encoder.stats.clear()  # measuring is not training: leave the counters as they were
    encoder.stats.update(stats)
    encoder.reject_examples[:] = examples
    return out


@dataclass(frozen=True)
class CostModel:
    """Estimated tokens per (source, index); the same on every rank."""

    catalog: Catalog
    stored: frozenset[str]
    """Sources whose shards hold this run's tokens."""
    ratios: dict[str, tuple[int, int]]
    """Other sources: (tokens, bytes) of their measured records."""
    cap: int = 0
    """Upper bound of one sample's cost (the truncation length); 0 = none."""

    def cost(self, source: str, index: int) -> int:
        reader = self.catalog.readers[source]
        if source in self.stored:
            tokens = member_size(reader, source, index, "tok.ids") // _ID_BYTES
        else:
            per, size = self.ratios[source]
            tokens = member_size(reader, source, index, "json") * per // size
        return min(tokens, self.cap) if self.cap else tokens
