"""The shard manifest: the commit marker of a shard directory, written last and atomically.

A directory without `manifest.json` is not a dataset (an interrupted write leaves none). The manifest
lists every shard (path, source, sample count, bytes, sha256) and its member index (see writer.py),
per-source totals, the schema version and a fingerprint that the loader's resume state is keyed on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from xlam_hpc.errors import ShardError
from xlam_hpc.files import fsync_dir
from xlam_hpc.shard.checksum import CHECKSUMS, DEFAULT_CHECKSUM

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "MEMBER_CHECKSUM", "Manifest", "ShardInfo", "load_manifest"]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MEMBER_CHECKSUM = DEFAULT_CHECKSUM
"""What `xlam-hpc shard` writes into the member index next to each member's (offset, size)."""


@dataclass(kw_only=True)
class ShardInfo:
    """One tar shard of one source."""

    path: str
    """Relative to the manifest's directory."""
    source: str
    num_samples: int
    num_bytes: int
    sha256: str
    first_index: int
    """Source-local index of the shard's first sample (samples are numbered per source)."""
    index_path: str
    """The member index: an .npy int64 array [num_samples, Manifest.index_stride * len(members)], per member
    (offset, size, checksum) or, in shard directories written before the checksum, (offset, size)."""
    index_sha256: str


@dataclass(kw_only=True)
class Manifest:
    """Contents of manifest.json."""

    version: int = MANIFEST_VERSION
    schema_version: str
    shards: list[ShardInfo]
    sources: dict[str, dict[str, Any]]
    """name → {num_samples, num_shards, kind: 'trajectory' | 'preference'}."""
    members: list[str] = field(default_factory=lambda: ["json"])
    """Tar member extensions of every sample, in index column order."""
    member_checksum: str = ""
    """'xxh3' (or 'crc32', earlier versions): the index holds each member's checksum (xlam_hpc.shard.checksum)
    and the reader checks every member it returns.
    '' (shard directories written before the checksum existed): (offset, size) only, read unchecked. An
    optional field rather than a version bump, so those directories and their fingerprints stay valid."""
    tokenizer: dict[str, Any] | None = None
    """Pre-tokenized shards: {fingerprint, name, render options}; None when only JSON is stored."""
    fingerprint: str = ""
    root: str = ""
    """Directory the manifest was loaded from (not stored)."""

    def compute_fingerprint(self) -> str:
        """Hash of everything that defines the sample stream: shard contents and their order."""
        h = hashlib.sha256()
        for s in self.shards:
            h.update(f"{s.source}\0{s.path}\0{s.num_samples}\0{s.sha256}\n".encode())
        return h.hexdigest()[:16]

    @property
    def index_stride(self) -> int:
        """Index columns per member."""
        return 3 if self.member_checksum else 2

    def shards_of(self, source: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.source == source]

    def to_json(self) -> bytes:
        data = msgspec.to_builtins(self)
        data.pop("root")
        return json.dumps(data, indent=1).encode() + b"\n"

    def write(self, directory: str | Path) -> Path:
        """Write atomically: temp file, fsync, rename, fsync the directory."""
        d = Path(directory)
        self.fingerprint = self.compute_fingerprint()
        tmp = d / (MANIFEST_NAME + ".tmp")
        with tmp.open("wb") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        final = d / MANIFEST_NAME
        tmp.replace(final)
        fsync_dir(d)
        return final


def load_manifest(directory: str | Path) -> Manifest:
    """Load DIR/manifest.json; ShardError naming the directory when absent or malformed."""
    d = Path(directory)
    path = d / MANIFEST_NAME
    if not path.is_file():
        hint = " (an interrupted `xlam-hpc shard` leaves no manifest)" if d.is_dir() else ""
        raise ShardError(f"{d}: no {MANIFEST_NAME}, not a shard directory{hint}")
    try:
        m = msgspec.json.decode(path.read_bytes(), type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ShardError(f"{path}: invalid manifest ({exc})") from None
    if m.version != MANIFEST_VERSION:
        raise ShardError(f"{path}: manifest version {m.version}, this xlam-hpc reads version {MANIFEST_VERSION}")
    if m.member_checksum and m.member_checksum not in CHECKSUMS:
        raise ShardError(f"{path}: member checksum '{m.member_checksum}', this xlam-hpc knows {sorted(CHECKSUMS)}")
    if m.fingerprint != m.compute_fingerprint():
        raise ShardError(f"{path}: fingerprint does not match the shard list (edited by hand?)")
    m.root = str(d.resolve())
    return m
