"""Per-rank seeding from one base seed, and RNG state capture/restore (dropout masks after resume)."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from xlam_hpc.stream import rng_state, seed_rank, set_rng_state, worker_generator


def _dropout_mask(n=64):
    return torch.nn.functional.dropout(torch.ones(n), p=0.5, training=True) > 0


def test_ranks_get_independent_reproducible_streams():
    masks = {}
    for rank in range(4):
        seed_rank(123, rank)
        masks[rank] = (_dropout_mask(), random.random(), np.random.rand())
    seed_rank(123, 2)
    again = (_dropout_mask(), random.random(), np.random.rand())
    assert torch.equal(again[0], masks[2][0]) and again[1:] == masks[2][1:]
    assert len({tuple(m[0].tolist()) for m in masks.values()}) == 4  # not base+rank copies of one stream
    seed_rank(124, 0)
    assert not torch.equal(_dropout_mask(), masks[1][0])  # xLAM's base+rank would make these equal


def test_rng_state_round_trip_gives_the_uninterrupted_masks(tmp_path):
    seed_rank(7, 1)
    _dropout_mask()
    saved = rng_state()
    torch.save(saved, tmp_path / "rng.pt")
    uninterrupted = [_dropout_mask() for _ in range(3)] + [random.random(), np.random.rand()]
    seed_rank(999, 0)  # a restarted process starts elsewhere
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    resumed = [_dropout_mask() for _ in range(3)] + [random.random(), np.random.rand()]
    assert all(torch.equal(a, b) for a, b in zip(resumed[:3], uninterrupted[:3], strict=True))
    assert resumed[3:] == uninterrupted[3:]


def test_worker_generators_differ_per_rank_worker_epoch():
    draws = {
        (r, w, e): worker_generator(5, r, w, e).integers(1 << 62) for r in range(2) for w in range(2) for e in range(2)
    }
    assert len(set(draws.values())) == 8
    assert worker_generator(5, 1, 1, 1).integers(1 << 62) == draws[(1, 1, 1)]
    json.dumps({str(k): int(v) for k, v in draws.items()})
