"""shard stage: WebDataset tar shards per source with a member index and an atomic manifest."""

from __future__ import annotations

from xlam_hpc.shard.inspect import inspect_dataset, render_text
from xlam_hpc.shard.manifest import Manifest, ShardInfo, load_manifest
from xlam_hpc.shard.reader import ShardReader, check_shards
from xlam_hpc.shard.writer import ShardConfig, ShardSummary, write_shards

__all__ = [
    "Manifest",
    "ShardConfig",
    "ShardInfo",
    "ShardReader",
    "ShardSummary",
    "check_shards",
    "inspect_dataset",
    "load_manifest",
    "render_text",
    "write_shards",
]
