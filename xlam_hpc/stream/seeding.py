"""Seeding done right: every random stream is derived from one base seed with numpy's SeedSequence.

- Data order: `generator(seed, purpose, *keys)` — independent of rank, worker and time, so the global
  sample order is the same whatever the world size.
- Per rank: `seed_rank(seed, rank)` seeds python/numpy/torch (dropout!) from SeedSequence(seed,
  spawn_key=(rank,)) — independent streams instead of xLAM's `base + rank`; `seed_rank(seed, rank,
  step)` after an elastic resume (another world size cannot continue the saved per-rank streams).
- Per (rank, worker, epoch): `worker_generator` for any randomness inside DataLoader workers.
- `rng_state()` / `set_rng_state()` capture and restore python, numpy, torch and CUDA generators, so a
  checkpoint resumes with the same dropout masks an uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np

__all__ = [
    "generator",
    "rng_state",
    "seed_rank",
    "seed_worker",
    "set_rng_state",
    "stable_key",
    "worker_generator",
]

_PURPOSES = {"mixture": 1, "shards": 2, "window": 3, "rank": 4, "worker": 5}


def stable_key(value: str | int) -> int:
    """A stable non-negative int for a string key (crc32; Python's hash() is salted per process)."""
    return value if isinstance(value, int) else zlib.crc32(value.encode("utf-8"))


def generator(seed: int, purpose: str, *keys: str | int) -> np.random.Generator:
    """Independent generator for (seed, purpose, keys); the same arguments always give the same stream."""
    entropy = [seed, _PURPOSES[purpose], *(stable_key(k) for k in keys)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def _rank_sequence(seed: int, rank: int, step: int | None = None) -> np.random.SeedSequence:
    key = (_PURPOSES["rank"], rank) if step is None else (_PURPOSES["rank"], rank, step)
    return np.random.SeedSequence(seed, spawn_key=key)


def seed_rank(seed: int, rank: int, step: int | None = None) -> None:
    """Seed python, numpy (legacy global) and torch (CPU + CUDA) for one rank. `step`: the step an
    elastic resume continues from (its ranks get fresh streams, distinct from the run's first ones)."""
    import torch

    words = _rank_sequence(seed, rank, step).generate_state(4, dtype=np.uint32)
    random.seed(int(words[0]))
    np.random.seed(int(words[1]))
    torch.manual_seed(int(words[2]) << 32 | int(words[3]))


def worker_generator(seed: int, rank: int, worker: int, epoch: int) -> np.random.Generator:
    """Generator for one DataLoader worker of one rank in one epoch."""
    seq = np.random.SeedSequence(seed, spawn_key=(_PURPOSES["worker"], rank, worker, epoch))
    return np.random.Generator(np.random.PCG64(seq))


def seed_worker(seed: int, rank: int, worker: int) -> None:
    """worker_init_fn body: seed the worker's global RNGs from (seed, rank, worker), not from the parent."""
    import torch

    words = np.random.SeedSequence(seed, spawn_key=(_PURPOSES["worker"], rank, worker)).generate_state(3)
    random.seed(int(words[0]))
    np.random.seed(int(words[1]))
    torch.manual_seed(int(words[2]))


def rng_state() -> dict[str, Any]:
    """Current python/numpy/torch/CUDA RNG states (tensors and plain containers: safe for weights_only)."""
    import torch

    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() returned."""
    import torch

    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
