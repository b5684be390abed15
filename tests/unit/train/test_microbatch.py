"""Splitting a rank's batch into micro-batches under a token budget (rows x width)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xlam_hpc.collate.encode import PairSample, Sample
from xlam_hpc.collate.packing import collate_dpo, collate_packed, collate_padded
from xlam_hpc.train.microbatch import filler, plan, split


def test_plan_is_greedy_consecutive_and_keeps_at_least_one_unit():
    assert plan([10, 10, 10], 20) == [(0, 2), (2, 3)]
    assert plan([10, 10, 10], 30) == [(0, 3)]
    assert plan([10, 10, 10], 1) == [(0, 1), (1, 2), (2, 3)]  # over budget: one unit each
    assert plan([4, 9, 2, 2], 18) == [(0, 2), (2, 4)]  # a slice costs its widest unit times its units
    assert plan([5, 5, 5], 20, rows_per_unit=2) == [(0, 2), (2, 3)]  # pairs: two rows per unit
    assert plan([], 100) == []


def _sample(n: int, seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    mask[n // 2 :] = True
    return Sample(input_ids=rng.integers(1, 1000, n), train_mask=mask, sample_id=f"s{seed}")


def test_packed_rows_split_by_budget():
    batch = collate_packed([_sample(n, i) for i, n in enumerate([30, 20, 25, 10, 31])], 32, pad_id=0)
    rows = batch["input_ids"].shape[0]
    assert rows == 4
    for budget, sizes in ((128, [4]), (64, [2, 2]), (95, [2, 2]), (32, [1, 1, 1, 1]), (1, [1, 1, 1, 1])):
        micros = split(batch, budget)
        assert [m["input_ids"].shape[0] for m in micros] == sizes, budget
        for key in ("input_ids", "labels", "position_ids"):
            assert torch.equal(torch.cat([m[key] for m in micros]), batch[key])
        assert all(m["input_ids"].shape[1] == 32 for m in micros)  # packed rows keep their width


def test_padded_rows_are_cut_to_their_longest_real_row():
    batch = collate_padded([_sample(n, i) for i, n in enumerate([30, 9, 12, 5])], pad_id=0)
    assert batch["input_ids"].shape == (4, 32)
    micros = split(batch, 24)  # rows 1 and 2 (widths 9, 12) fit together: 2 x 12
    assert [tuple(m["input_ids"].shape) for m in micros] == [(1, 30), (2, 12), (1, 5)]
    assert torch.equal(micros[1]["labels"], batch["labels"][1:3, :12])
    assert int(micros[2]["attention_mask"].sum()) == 5


def test_dpo_pairs_stay_together():
    pairs = [
        PairSample(sample_id=f"p{i}", chosen=_sample(c, i), rejected=_sample(r, 10 + i))
        for i, (c, r) in enumerate([(8, 20), (6, 7), (9, 4)])
    ]
    batch = collate_dpo(pairs, pad_id=0, multiple=8)
    batch["sample_ids"] = ["p0", "p1", "p2"]
    micros = split(batch, 40, pairs=True)  # pair 0 costs 2 x 20; pairs 1 and 2 together 4 x 9
    assert [m["num_pairs"] for m in micros] == [1, 2] and [m["pair_ids"] for m in micros] == [["p0"], ["p1", "p2"]]
    second = micros[1]
    assert torch.equal(second["input_ids"], batch["input_ids"][[1, 2, 4, 5], :9])  # chosen 1, 2 then rejected 1, 2
    assert split(batch, 1, pairs=True)[2]["pair_ids"] == ["p2"]
    empty = collate_dpo([], pad_id=0)
    assert split(empty, 100, pairs=True) == []


@pytest.mark.parametrize("kind", ["packed", "padded"])
def test_filler_has_no_labels(kind):
    samples = [_sample(20, 1), _sample(12, 2)]
    batch = collate_packed(samples, 32, 0) if kind == "packed" else collate_padded(samples, 0)
    micro = filler(batch)
    assert micro["input_ids"].shape == (1, 8) and bool((micro["labels"] == -100).all())
    assert micro["num_pairs"] == 0 and micro["pair_ids"] == [] and micro["filler"]
