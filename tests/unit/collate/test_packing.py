"""Packing: BFD properties, restarting positions, and packed logits equal unpacked ones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xlam_hpc.collate import IGNORE_INDEX, Sample, best_fit_decreasing, collate_packed, collate_padded


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=0, max_size=60), st.integers(64, 200))
def test_bfd_places_every_item_once_within_capacity(lengths, cap):
    bins = best_fit_decreasing(lengths, cap)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= cap for b in bins)
    assert bins == best_fit_decreasing(list(lengths), cap)  # deterministic
    # any-fit property: at most one bin is at most half full (else its items would have fit elsewhere)
    assert sum(2 * sum(lengths[i] for i in b) <= cap for b in bins) <= 1


def test_bfd_rejects_oversized_items():
    with pytest.raises(ValueError, match="exceeds the bin capacity"):
        best_fit_decreasing([5, 11], 10)


def _sample(i, n):
    ids = np.arange(10 + i * 100, 10 + i * 100 + n, dtype=np.int32)
    return Sample(f"s{i}", ids, np.arange(n) % 2 == 1)


def test_packed_batch_layout():
    samples = [_sample(i, n) for i, n in enumerate([7, 3, 5, 4])]
    b = collate_packed(samples, seq_length=10, pad_id=0)
    assert b["input_ids"].shape == (2, 10)
    assert b["num_tokens"] == 19 and b["pad_fraction"] == pytest.approx(1 / 20)
    row0 = b["position_ids"][0].tolist()
    assert row0 == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]  # 7 + 3, positions restart per sample
    assert b["cu_seqlens"] == [[0, 7, 10], [0, 5, 9]]
    assert b["position_ids"][1].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0]
    assert b["labels"][1, 9].item() == IGNORE_INDEX and b["input_ids"][1, 9].item() == 0
    lab = b["labels"][0, :7]
    assert lab.tolist() == [IGNORE_INDEX if k % 2 == 0 else 10 + k for k in range(7)]
    padded = collate_padded(samples, pad_id=0, multiple=8)
    assert padded["input_ids"].shape == (4, 8) and padded["attention_mask"].sum().item() == 19


def test_packed_forward_equals_separate_forwards():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=600,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = MistralForCausalLM(cfg).eval()
    samples = [_sample(i, n) for i, n in enumerate([9, 4, 6, 5])]
    b = collate_packed(samples, seq_length=16, pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
        for r, bounds in enumerate(b["cu_seqlens"]):
            for start, end in itertools.pairwise(bounds):
                alone = model(input_ids=b["input_ids"][r : r + 1, start:end], use_cache=False).logits[0]
                torch.testing.assert_close(packed[r, start:end], alone, atol=1e-5, rtol=1e-4)
