"""Random access to samples of a shard directory: (source, local index) → record, one pread per member.

Every member returned is checked against the checksum the writer put in the member index (shard
directories written before that are read unchecked). Only `.json` (msgspec, typed) and raw numeric
members are ever decoded; there is no pickle decoder on this path (webdataset's `.decode()` would
register them for `.pyd`/`.pickle` members).
"""

from __future__ import annotations

import bisect
import hashlib
import io
import os
import resource
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xlam_hpc.errors import ShardError
from xlam_hpc.files import sha256_file
from xlam_hpc.schema import Preference, RecordInvalid, Trajectory, decode_record
from xlam_hpc.shard.checksum import CHECKSUMS
from xlam_hpc.shard.manifest import Manifest, ShardInfo, load_manifest

__all__ = ["DEFAULT_INDEX_CACHE_BYTES", "ShardReader", "check_shards", "default_max_open_files"]

DEFAULT_INDEX_CACHE_BYTES = 256 << 20


def default_max_open_files() -> int:
    """min(1024, half the soft RLIMIT_NOFILE): one descriptor per live shard, so that a mixture of a
    hundred or more sources does not reopen a file per sample, with room left for everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1024 if soft == resource.RLIM_INFINITY else max(1, min(1024, soft // 2))


@dataclass
class _SourceView:
    shards: list[ShardInfo]
    starts: list[int] = field(default_factory=list)
    num_samples: int = 0


def _size_problem(actual: int, expected: int) -> str | None:
    return None if actual == expected else f"size {actual} bytes, manifest says {expected} (truncated or replaced)"


class ShardReader:
    """Reads samples by (source, source-local index) through the manifest's member index.

    Construction reads one directory listing (per folder holding shards) and, with skip_bad_shards, one
    stat per tar: at 100k shards x hundreds of ranks, per-file checks would be a metadata storm on a
    parallel file system. Without skip_bad_shards a tar's size is checked on its descriptor when it is
    first opened.

    Args:
        manifest: a loaded manifest, or its directory.
        skip_bad_shards: drop shards whose file is missing or has the wrong size instead of raising;
            the remaining samples are renumbered per source and `skipped` lists what was dropped.
        index_cache_bytes: member indexes kept in memory (least recently used first out); an index larger
            than this is still used, just not kept beyond the next load.
        max_open_files: shard descriptors kept open (least recently used closed first); None:
            `default_max_open_files()`.
    """

    def __init__(
        self,
        manifest: Manifest | str | Path,
        *,
        skip_bad_shards: bool = False,
        index_cache_bytes: int = DEFAULT_INDEX_CACHE_BYTES,
        max_open_files: int | None = None,
    ) -> None:
        if index_cache_bytes < 0:
            raise ValueError(f"index_cache_bytes must be >= 0, got {index_cache_bytes}")
        if max_open_files is not None and max_open_files < 1:
            raise ValueError(f"max_open_files must be >= 1, got {max_open_files}")
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.root = Path(self.manifest.root)
        self.index_cache_bytes = index_cache_bytes
        self.max_open_files = default_max_open_files() if max_open_files is None else max_open_files
        self.skipped: list[str] = []
        self._views: dict[str, _SourceView] = {}
        self._sized: set[str] = set()  # tars whose size was checked against the manifest
        present = self._listing()
        for info in self.manifest.shards:
            problem = next(
                (
                    f"missing ({name} is listed in the manifest)"
                    for name in (info.path, info.index_path)
                    if os.path.normpath(name) not in present
                ),
                None,
            )
            if problem is None and skip_bad_shards:
                try:
                    problem = _size_problem(os.stat(self.root / info.path).st_size, info.num_bytes)
                except OSError as exc:  # removed since the listing
                    problem = f"unreadable ({exc.strerror or exc})"
                self._sized.add(info.path)
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
        # None only in benchmarks and in directories written before member checksums
        self._checksum = CHECKSUMS[self.manifest.member_checksum] if self.manifest.member_checksum else None
        self._index: OrderedDict[str, np.ndarray] = OrderedDict()
        self._index_bytes = 0
        self._fds: OrderedDict[str, int] = OrderedDict()

    def _listing(self) -> set[str]:
        """Normalized relative names of the files in every folder the manifest lists files in."""
        folders = {os.path.dirname(os.path.normpath(n)) for s in self.manifest.shards for n in (s.path, s.index_path)}
        present: set[str] = set()
        for folder in folders:
            try:
                with os.scandir(self.root / folder) as entries:
                    present.update(os.path.join(folder, e.name) for e in entries)
            except FileNotFoundError:
                continue
        return present

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

    def _column(self, member: str) -> int:
        col = self._members.get(member)
        if col is None:
            raise ShardError(f"{self.root}: samples have no '.{member}' member (members: {list(self._members)})")
        return col

    def _shard_index(self, info: ShardInfo) -> np.ndarray:
        idx = self._index.get(info.path)
        if idx is not None:
            self._index.move_to_end(info.path)
            return idx
        path = self.root / info.index_path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ShardError(f"{path}: cannot read the member index ({exc.strerror or exc})") from None
        if hashlib.sha256(data).hexdigest() != info.index_sha256:
            raise ShardError(f"{path}: member index does not match its sha256 in the manifest")
        idx = np.load(io.BytesIO(data), allow_pickle=False)
        shape = (info.num_samples, self._stride * len(self._members))
        if idx.shape != shape:
            raise ShardError(f"{path}: index has shape {idx.shape}, manifest says {shape}")
        self._index[info.path] = idx
        self._index_bytes += idx.nbytes
        while self._index_bytes > self.index_cache_bytes and len(self._index) > 1:
            self._index_bytes -= self._index.popitem(last=False)[1].nbytes
        return idx

    def _fd(self, info: ShardInfo) -> int:
        fd = self._fds.get(info.path)
        if fd is not None:
            self._fds.move_to_end(info.path)
            return fd
        path = self.root / info.path
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise ShardError(f"{path}: cannot open ({exc.strerror or exc})") from None
        if info.path not in self._sized:
            problem = _size_problem(os.fstat(fd).st_size, info.num_bytes)
            if problem:
                os.close(fd)
                raise ShardError(f"{path}: {problem}")
            self._sized.add(info.path)
        if len(self._fds) >= self.max_open_files:
            os.close(self._fds.popitem(last=False)[1])
        self._fds[info.path] = fd
        return fd

    def member_size(self, source: str, index: int, member: str) -> int:
        """Bytes of one member of one sample, from the member index (no shard data is read)."""
        info, row = self._locate(source, index)
        size = int(self._shard_index(info)[row, self._stride * self._column(member) + 1])
        if size < 0:
            raise ShardError(f"{self.root / info.path}: sample {row} lacks the member '.{member}'")
        return size

    def read_member(self, source: str, index: int, member: str = "json") -> bytes:
        """Raw bytes of one member of one sample."""
        return self.read_members(source, index, (member,))[0]

    def read_members(self, source: str, index: int, members: tuple[str, ...]) -> list[bytes]:
        """Raw bytes of several members of one sample, with one read (a sample's members are adjacent)."""
        info, row = self._locate(source, index)
        cols = [self._column(member) for member in members]
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
        check = self._checksum
        if check is not None and list(map(check, parts)) != [entry[k * c + 2] for c in cols]:
            bad = next(m for m, c, p in zip(members, cols, parts, strict=True) if check(p) != entry[k * c + 2])
            raise ShardError(
                f"{self.root / info.path}: sample {row} ({source}:{index}) member .{bad} fails its "
                f"{self.manifest.member_checksum} check (corrupted in place?)"
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
        # DataLoader workers receive a copy: file descriptors are per process, reopen lazily; indexes
        # reload on demand rather than travel through the pickle.
        state = self.__dict__.copy()
        state.update(_fds=OrderedDict(), _index=OrderedDict(), _index_bytes=0)
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
