"""Random access to samples of a shard directory: (source, local index) → record, one pread per member.

Every member returned is checked against the crc32 the writer put in the member index (shard
directories written before that are read unchecked). Only `.json` (msgspec, typed) and raw numeric
members are ever decoded; there is no pickle decoder on this path (webdataset's `.decode()` would
register them for `.pyd`/`.pickle` members).
"""

from __future__ import annotations

import bisect
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xlam_hpc.errors import ShardError
from xlam_hpc.files import sha256_file
from xlam_hpc.schema import Preference, RecordInvalid, Trajectory, decode_record
from xlam_hpc.shard.manifest import Manifest, ShardInfo, load_manifest

__all__ = ["ShardReader", "check_shards"]

_MAX_OPEN_FILES = 64


@dataclass
class _SourceView:
    shards: list[ShardInfo]
    starts: list[int] = field(default_factory=list)
    num_samples: int = 0


class ShardReader:
    """Reads samples by (source, source-local index) through the manifest's member index.

    Args:
        manifest: a loaded manifest, or its directory.
        skip_bad_shards: drop shards whose file is missing or has the wrong size instead of raising;
            the remaining samples are renumbered per source and `skipped` lists what was dropped.
    """

    def __init__(self, manifest: Manifest | str | Path, *, skip_bad_shards: bool = False) -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.root = Path(self.manifest.root)
        self.skipped: list[str] = []
        self._views: dict[str, _SourceView] = {}
        for info in self.manifest.shards:
            problem = self._stat_problem(info)
            if problem:
                if not skip_bad_shards:
                    raise ShardError(f"{self.root / info.path}: {problem}")
                self.skipped.append(f"{info.path}: {problem}")
                continue
            view = self._views.setdefault(info.source, _SourceView([]))
            view.starts.append(view.num_samples)
            view.shards.append(info)
            view.num_samples += info.num_samples
        self._members = {ext: i for i, ext in enumerate(self.manifest.members)}
        self._stride = self.manifest.index_stride
        self._check_crc = bool(self.manifest.member_checksum)  # False only in benchmarks and old directories
        self._index: dict[str, np.ndarray] = {}
        self._fds: OrderedDict[str, int] = OrderedDict()

    def _stat_problem(self, info: ShardInfo) -> str | None:
        for name, size in ((info.path, info.num_bytes), (info.index_path, None)):
            p = self.root / name
            if not p.is_file():
                return f"missing ({name} is listed in the manifest)"
            if size is not None and p.stat().st_size != size:
                return f"size {p.stat().st_size} bytes, manifest says {size} (truncated or replaced)"
        return None

    @property
    def sources(self) -> dict[str, int]:
        """Readable samples per source."""
        return {name: v.num_samples for name, v in self._views.items()}

    def shard_sizes(self, source: str) -> tuple[int, ...]:
        """Samples per readable shard of `source`, in manifest order."""
        view = self._views.get(source)
        return tuple(s.num_samples for s in view.shards) if view else ()

    def _locate(self, source: str, index: int) -> tuple[ShardInfo, int]:
        view = self._views.get(source)
        if view is None:
            raise ShardError(f"{self.root}: no source '{source}' (sources: {sorted(self._views)})")
        if not 0 <= index < view.num_samples:
            raise ShardError(f"{self.root}: source '{source}' has {view.num_samples} samples, asked for {index}")
        k = bisect.bisect_right(view.starts, index) - 1
        return view.shards[k], index - view.starts[k]

    def _shard_index(self, info: ShardInfo) -> np.ndarray:
        idx = self._index.get(info.path)
        if idx is None:
            path = self.root / info.index_path
            if sha256_file(path) != info.index_sha256:
                raise ShardError(f"{path}: member index does not match its sha256 in the manifest")
            idx = np.load(path, allow_pickle=False)
            shape = (info.num_samples, self._stride * len(self._members))
            if idx.shape != shape:
                raise ShardError(f"{path}: index has shape {idx.shape}, manifest says {shape}")
            self._index[info.path] = idx
        return idx

    def _fd(self, info: ShardInfo) -> int:
        fd = self._fds.get(info.path)
        if fd is None:
            if len(self._fds) >= _MAX_OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
            fd = self._fds[info.path] = os.open(self.root / info.path, os.O_RDONLY)
        else:
            self._fds.move_to_end(info.path)
        return fd

    def read_member(self, source: str, index: int, member: str = "json") -> bytes:
        """Raw bytes of one member of one sample."""
        return self.read_members(source, index, (member,))[0]

    def read_members(self, source: str, index: int, members: tuple[str, ...]) -> list[bytes]:
        """Raw bytes of several members of one sample, with one read (a sample's members are adjacent)."""
        info, row = self._locate(source, index)
        cols = []
        for member in members:
            col = self._members.get(member)
            if col is None:
                raise ShardError(f"{self.root}: samples have no '.{member}' member (members: {list(self._members)})")
            cols.append(col)
        entry, k = self._shard_index(info)[row].tolist(), self._stride
        spans = [(entry[k * c], entry[k * c + 1]) for c in cols]
        if any(o < 0 for o, _ in spans):
            raise ShardError(f"{self.root / info.path}: sample {row} lacks one of the members {list(members)}")
        start = min(o for o, _ in spans)
        size = max(o + n for o, n in spans) - start
        data = os.pread(self._fd(info), size, start)
        if len(data) != size:
            raise ShardError(f"{self.root / info.path}: sample {row} ends past the end of the file (truncated shard)")
        view = memoryview(data)
        parts = [bytes(view[o - start : o - start + n]) if len(spans) > 1 else data for o, n in spans]
        if self._check_crc:
            for member, c, part in zip(members, cols, parts, strict=True):
                if zlib.crc32(part) != entry[k * c + 2]:
                    raise ShardError(
                        f"{self.root / info.path}: sample {row} ({source}:{index}) member .{member} fails its "
                        "crc32 check (corrupted in place?)"
                    )
        return parts

    def record(self, source: str, index: int) -> Trajectory | Preference:
        """The validated unified record of one sample."""
        data = self.read_member(source, index, "json")
        try:
            return decode_record(data)
        except RecordInvalid as exc:
            info, row = self._locate(source, index)
            raise ShardError(f"{self.root / info.path}: sample {row} ({source}:{index}) is corrupt: {exc}") from None

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        # DataLoader workers receive a copy: file descriptors are per process, reopen lazily.
        state = self.__dict__.copy()
        state["_fds"] = OrderedDict()
        return state


def check_shards(manifest: Manifest) -> list[str]:
    """Full integrity check (sha256 of every shard and index file). Returns one line per problem."""
    root = Path(manifest.root)
    problems = []
    for info in manifest.shards:
        for name, digest in ((info.path, info.sha256), (info.index_path, info.index_sha256)):
            p = root / name
            if not p.is_file():
                problems.append(f"{p}: missing")
            elif sha256_file(p) != digest:
                problems.append(f"{p}: sha256 mismatch (corrupt or modified)")
    return problems
