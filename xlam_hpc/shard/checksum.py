"""Per-member checksums kept in the member index, next to each member's (offset, size).

The reader checks every member it returns, so a shard corrupted in place is named instead of streamed.
`xxh3` (the default: xxh3_64, top 63 bits so it fits the int64 index) hashes ~10x faster than zlib's crc32
here (0.3 vs 2.3 µs per 8 KB member), which matters on pre-tokenized shards where the loader reads millions of
tokens per second; `crc32` directories (written by earlier versions) are still checked.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import xxhash

__all__ = ["CHECKSUMS", "DEFAULT_CHECKSUM"]


def _xxh3(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data) >> 1


CHECKSUMS: dict[str, Callable[[bytes], int]] = {"xxh3": _xxh3, "crc32": zlib.crc32}
DEFAULT_CHECKSUM = "xxh3"
