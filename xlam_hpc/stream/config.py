"""StreamConfig: which shards, mixed how, cut into which global batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["EvalSplitConfig", "StreamConfig"]


@dataclass(kw_only=True)
class EvalSplitConfig:
    """Recipe section `data.eval:`: validation data, never part of the training stream."""

    shards: list[str] = field(default_factory=list)
    """Held-out shard directories: validation samples from each of their sources."""
    fraction: float = 0.0
    """Split this fraction of every training source off by trajectory id (a hash of the id and `seed`):
    those trajectories are skipped by the training stream (counted as `held_out`) and validated on."""
    seed: int = 0
    """Seed of the split; separate from the run's seed, so seed replicates validate on the same trajectories."""
    max_samples: int = 256
    """Validation samples per source (the first ones by shard index)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"data.eval.fraction must be in [0, 1), got {self.fraction}")
        if not self.shards and self.fraction == 0.0:
            raise ValueError("data.eval needs held-out `shards` or a `fraction` of the training sources")
        if self.max_samples < 1:
            raise ValueError(f"data.eval.max_samples must be >= 1, got {self.max_samples}")


@dataclass(kw_only=True)
class StreamConfig:
    """Recipe section `data:`."""

    shards: list[str]
    """Shard directories (each with a manifest.json); source names must be unique across them."""
    weights: dict[str, float] = field(default_factory=dict)
    """Mixture weight per source (normalized). Empty: proportional to size. Naming only some sources is an
    error listing the others, unless `weights_default` says what they get."""
    weights_default: float | None = None
    """Weight of the sources `weights` leaves out: 0 = not used (say so explicitly); None = they are an error."""
    global_batch_size: int = 8
    """Samples per optimizer step across all ranks (divisible by the world size)."""
    mixture_block: int = 0
    """Block size of the exact mixture quotas (every block is within ±1 of weight×block); 0 = global_batch_size."""
    window_shards: int = 4
    """Shuffle window: samples are permuted within groups of this many (shuffled) shards of a source."""
    balance: Literal["tokens", "samples"] = "tokens"
    """How a step's samples are cut over the ranks: "tokens" = about equal estimated tokens per rank
    (longest-processing-time greedy; the slowest rank sets the step time), "samples" = contiguous equal
    slices. The global stream, and so the mixture, is the same either way."""
    num_workers: int = 0
    """DataLoader worker processes per rank (the sample stream is the same for any value)."""
    prefetch_factor: int = 2
    skip_bad_shards: bool = False
    """Skip shards that are missing or truncated (counted and logged) instead of failing."""
    index_cache_mb: int = 256
    """Member indexes kept in memory per shard directory (MiB, least recently used out first); with
    balance "tokens" every rank reads the index of every shard a step draws from."""
    max_open_files: int | None = None
    """Shard files kept open per shard directory; None = min(1024, half the soft RLIMIT_NOFILE)."""
    eval: EvalSplitConfig | None = None
    """Validation data (train.eval_interval says how often); None = no validation."""
    samples_per_epoch: int = 0
    """Nominal epoch length for reporting and per-epoch worker seeds; 0 = total samples of the used sources."""

    def __post_init__(self) -> None:
        if not self.shards:
            raise ValueError("data.shards must name at least one shard directory")
        if self.global_batch_size < 1:
            raise ValueError(f"data.global_batch_size must be >= 1, got {self.global_batch_size}")
        if self.num_workers < 0 or self.window_shards < 1 or self.mixture_block < 0:
            raise ValueError("data.num_workers >= 0, data.window_shards >= 1 and data.mixture_block >= 0 are required")
        if self.index_cache_mb < 0 or (self.max_open_files is not None and self.max_open_files < 1):
            raise ValueError("data.index_cache_mb >= 0 and data.max_open_files >= 1 (or null) are required")
        if self.balance not in ("tokens", "samples"):
            raise ValueError(f"data.balance must be 'tokens' or 'samples', got {self.balance!r}")
