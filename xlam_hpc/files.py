"""Durable-file helpers shared by the shard manifest and checkpoints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["fsync_dir", "sha256_file"]


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable (the directory entry itself is flushed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path, *, chunk: int = 1 << 22, fsync: bool = False) -> str:
    """Hex sha256 of a file, read in chunks; with fsync=True its data is also flushed to disk."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
        if fsync:
            os.fsync(f.fileno())
    return h.hexdigest()
