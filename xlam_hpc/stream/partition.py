"""Global order → ranks → workers. Pure functions; the global order never depends on world size.

Step k after a start position P covers the global positions [P + k·G, P + (k+1)·G), whatever the
world size W, so a resume with another world size continues from P with nothing duplicated or dropped.
Two ways to cut a step over the ranks (every rank gets one batch per step: no DDP hang):
- "samples": rank r takes the contiguous G/W positions [P + k·G + r·G/W, P + k·G + (r+1)·G/W);
- "tokens": `balance_by_cost` — longest-processing-time greedy on each sample's estimated tokens, so a
  synchronous step does not wait on the rank that drew the long trajectories. It is a function of the
  step's positions and their costs, which every rank computes alike (see stream/cost.py).
Worker w of n produces the steps k ≡ w (mod n); torchdata's in-order round robin hands them back in
step order, so the per-rank stream is the same for any number of workers.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from xlam_hpc.errors import ConfigError

__all__ = ["balance_by_cost", "per_rank_batch", "rank_positions", "step_positions", "steps_of_worker"]


def per_rank_batch(global_batch: int, world_size: int) -> int:
    if world_size < 1 or global_batch % world_size:
        raise ConfigError(f"global_batch_size {global_batch} is not divisible by the world size {world_size}")
    return global_batch // world_size


def rank_positions(start: int, step: int, global_batch: int, world_size: int, rank: int) -> range:
    """Global positions of `rank`'s samples in the `step`-th step after position `start`."""
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside world size {world_size}")
    b = per_rank_batch(global_batch, world_size)
    first = start + step * global_batch + rank * b
    return range(first, first + b)


def step_positions(start: int, step: int, global_batch: int) -> range:
    """Global positions of the `step`-th step after position `start` (all ranks together)."""
    first = start + step * global_batch
    return range(first, first + global_batch)


def balance_by_cost(positions: Sequence[int], costs: Sequence[int], world_size: int) -> list[list[int]]:
    """Per rank, its positions (ascending) of one step: longest-processing-time greedy. Samples go in
    order of cost descending (ties: lower position first), each to the least-loaded rank (ties: lower
    rank). Costs below 1 count as 1, so with at least `world_size` samples every rank gets one, and the
    heaviest rank carries at most mean + max(cost)."""
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")
    if len(positions) != len(costs):
        raise ValueError(f"{len(positions)} positions but {len(costs)} costs")
    heap = [(0, r) for r in range(world_size)]
    out: list[list[int]] = [[] for _ in range(world_size)]
    for cost, pos in sorted(zip((max(int(c), 1) for c in costs), positions, strict=True), key=lambda x: (-x[0], x[1])):
        load, r = heap[0]
        heapq.heapreplace(heap, (load + cost, r))
        out[r].append(pos)
    for ranks in out:
        ranks.sort()
    return out


def steps_of_worker(worker: int, num_workers: int, first_step: int = 0) -> range:
    """Step indices produced by one worker, from `first_step` on (an unbounded range)."""
    n = max(num_workers, 1)
    begin = first_step + (worker - first_step) % n
    return range(begin, 2**62, n)
