"""Global order → ranks → workers. Pure functions; the global order never depends on world size.

Step k after a start position P gives rank r the contiguous positions
[P + k·G + r·G/W, P + k·G + (r+1)·G/W): every rank gets exactly one batch per step (equal work, no
DDP hang), and a resume with another world size continues from P with nothing duplicated or dropped.
Worker w of n produces the steps k ≡ w (mod n); torchdata's in-order round robin hands them back in
step order, so the per-rank stream is the same for any number of workers.
"""

from __future__ import annotations

from xlam_hpc.errors import ConfigError

__all__ = ["per_rank_batch", "rank_positions", "steps_of_worker"]


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


def steps_of_worker(worker: int, num_workers: int, first_step: int = 0) -> range:
    """Step indices produced by one worker, from `first_step` on (an unbounded range)."""
    n = max(num_workers, 1)
    begin = first_step + (worker - first_step) % n
    return range(begin, 2**62, n)
