"""stream stage: exact mixture, per-rank/per-worker partition, per-rank seeding, O(1) exact resume."""

from __future__ import annotations

from xlam_hpc.stream.catalog import Catalog, GlobalOrder, open_catalog
from xlam_hpc.stream.config import StreamConfig
from xlam_hpc.stream.loader import STATE_VERSION, XlamLoader, build_loader
from xlam_hpc.stream.mixture import MixturePlan, block_quotas, normalize_weights
from xlam_hpc.stream.order import SourceOrder
from xlam_hpc.stream.partition import balance_by_cost, per_rank_batch, rank_positions, step_positions, steps_of_worker
from xlam_hpc.stream.seeding import rng_state, seed_rank, set_rng_state, worker_generator

__all__ = [
    "STATE_VERSION",
    "Catalog",
    "GlobalOrder",
    "MixturePlan",
    "SourceOrder",
    "StreamConfig",
    "XlamLoader",
    "balance_by_cost",
    "block_quotas",
    "build_loader",
    "normalize_weights",
    "open_catalog",
    "per_rank_batch",
    "rank_positions",
    "rng_state",
    "seed_rank",
    "set_rng_state",
    "step_positions",
    "steps_of_worker",
    "worker_generator",
]
