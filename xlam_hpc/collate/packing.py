"""Batches of one step: best-fit-decreasing packing (padding-free) or plain padding.

Packing is a pure function of the step's samples, so resume stays exact. Packed rows carry
`position_ids` that restart at 0 for every sample (and for the padding tail), which transformers turns
into a block-diagonal causal mask (SDPA/eager) or varlen flash attention, and `cu_seqlens` for kernels
that take them directly. Hand-written: TRL's packing (`pack_dataset`) works on a whole `datasets` table
and is not deterministic per step window.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

import numpy as np
import torch

from xlam_hpc.collate.encode import PairSample, Sample

__all__ = ["IGNORE_INDEX", "best_fit_decreasing", "collate_dpo", "collate_packed", "collate_padded"]

IGNORE_INDEX = -100


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices; each bin's total length ≤ capacity. Deterministic (ties by index)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (free space, bin number)
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} of length {n} exceeds the bin capacity {capacity}")
        k = bisect.bisect_left(free, (n, -1))  # tightest bin that still fits
        if k < len(free):
            space, b = free.pop(k)
            bins[b].append(i)
            bisect.insort(free, (space - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (capacity - n, len(bins) - 1))
    return bins


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _labels(sample: Sample) -> np.ndarray:
    return np.where(sample.train_mask, sample.input_ids, IGNORE_INDEX)


def collate_packed(samples: list[Sample], seq_length: int, pad_id: int) -> dict[str, Any]:
    """[rows, seq_length] packed batch with restarting position_ids and per-row cu_seqlens."""
    bins = best_fit_decreasing([len(s) for s in samples], seq_length)
    rows = max(len(bins), 1)
    ids = np.full((rows, seq_length), pad_id, dtype=np.int64)
    labels = np.full((rows, seq_length), IGNORE_INDEX, dtype=np.int64)
    pos = np.zeros((rows, seq_length), dtype=np.int64)
    cu_seqlens, row_lengths = [], np.zeros(rows, dtype=np.int64)
    ramp = np.arange(seq_length, dtype=np.int64)
    for r, members in enumerate(bins):
        lengths = [len(samples[i]) for i in members]
        bounds = [0, *itertools.accumulate(lengths)]
        at = bounds[-1]
        ids[r, :at] = np.concatenate([samples[i].input_ids for i in members])
        trained = np.concatenate([samples[i].train_mask for i in members])
        labels[r, :at] = np.where(trained, ids[r, :at], IGNORE_INDEX)
        for start, n in zip(bounds, lengths, strict=False):
            pos[r, start : start + n] = ramp[:n]
            labels[r, start] = IGNORE_INDEX  # nothing before it in its sample: never a target across a boundary
        pos[r, at:] = ramp[: seq_length - at]  # the padding tail is its own "sequence"
        cu_seqlens.append(bounds)
        row_lengths[r] = at
    real = sum(len(s) for s in samples)
    return {
        "input_ids": torch.from_numpy(ids),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(pos),
        "cu_seqlens": cu_seqlens,
        "row_lengths": torch.from_numpy(row_lengths),
        "num_tokens": real,
        "num_loss_tokens": int((labels != IGNORE_INDEX).sum()),
        "pad_fraction": 1.0 - real / (rows * seq_length) if samples else 1.0,
    }


def collate_padded(samples: list[Sample], pad_id: int, multiple: int = 8) -> dict[str, Any]:
    """[N, longest] right-padded batch with an attention mask (the non-packing alternative)."""
    width = _round_up(max((len(s) for s in samples), default=1), multiple)
    ids = np.full((max(len(samples), 1), width), pad_id, dtype=np.int64)
    labels = np.full_like(ids, IGNORE_INDEX)
    mask = np.zeros_like(ids)
    for r, s in enumerate(samples):
        n = len(s)
        ids[r, :n], labels[r, :n], mask[r, :n] = s.input_ids, _labels(s), 1
    real = sum(len(s) for s in samples)
    return {
        "input_ids": torch.from_numpy(ids),
        "labels": torch.from_numpy(labels),
        "attention_mask": torch.from_numpy(mask),
        "num_tokens": real,
        "num_loss_tokens": int(sum(s.train_mask.sum() for s in samples)),
        "pad_fraction": 1.0 - real / ids.size,
    }


def collate_dpo(pairs: list[PairSample], pad_id: int, multiple: int = 8) -> dict[str, Any]:
    """Chosen rows then rejected rows in one padded [2N, L] batch (one forward pass for both)."""
    chosen = collate_padded([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, multiple)
    chosen["num_pairs"] = len(pairs)
    return chosen
