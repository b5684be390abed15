"""Estimated tokens of one sample, for balancing a step over the ranks ("tokens" balance).

Every rank must compute the same cost for every sample of the step, cheaply and without tokenizing
other ranks' samples, so a cost comes from the member index alone (no sample data is read):
- pre-tokenized sources (shards encoded with this run's render fingerprint): the stored ids' bytes / 4;
- other sources: the JSON member's bytes × that source's tokens-per-byte, measured once at build time
  on its first records with the run's encoder (deterministic, hence equal on every rank).
Integer arithmetic throughout, so every rank computes the same costs bit for bit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from xlam_hpc.collate import SampleEncoder
from xlam_hpc.stream.catalog import Catalog

__all__ = ["CostModel", "measure_ratios"]

_ID_BYTES = 4  # stored token ids are int32
_FALLBACK = (1, 4)  # tokens per byte when no measured record gave a token


def measure_ratios(
    catalog: Catalog, encoder: SampleEncoder, names: tuple[str, ...], task: str, records: int = 16
) -> dict[str, tuple[int, int]]:
    """source → (tokens, JSON bytes) of its first `records` records, encoded with the run's encoder."""
    stats, examples = Counter(encoder.stats), list(encoder.reject_examples)
    out = {}
    for name in names:
        reader = catalog.readers[name]
        first = range(min(records, catalog.sizes[name]))
        items = [(f"{name}:{i}", reader.record(name, i)) for i in first]
        size = sum(reader.member_size(name, i, "json") for i in first)
        if task == "dpo":
            tokens = sum(len(p.chosen) + len(p.rejected) for p in encoder.encode_dpo(items))
        else:
            tokens = sum(len(s) for s in encoder.encode_sft(items))
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
            tokens = reader.member_size(source, index, "tok.ids") // _ID_BYTES
        else:
            per, size = self.ratios[source]
            tokens = reader.member_size(source, index, "json") * per // size
        return min(tokens, self.cap) if self.cap else tokens
