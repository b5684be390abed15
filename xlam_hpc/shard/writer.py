"""shard stage: unified JSONL → WebDataset tar shards per source + member index + manifest.

Shards are written with webdataset's TarWriter (encoder off: we hand it bytes, so no pickle encoder is
ever involved; mtime fixed to the int 0 so the same input gives byte-identical shards; a float mtime would add a
PAX header per member). Everything goes to a
temporary folder inside the output directory and is moved into place at the end; the manifest is
written last, so a killed run leaves no manifest pointing at partial shards.

Member index: each sample's (offset, size, checksum) per member is recorded while it is written (the
offset is checked against the tar stream's own; a miss falls back to one scan of the tar) and saved
next to the shard as `<shard>.idx.npy`. The loader then reads any sample with one pread, never scans
tar headers at start-up, and checks each member's checksum (a shard corrupted in place is named, not
streamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from xlam_hpc.convert.reader import DEFAULT_MAX_RECORD_BYTES, RawError, check_text_file, explain_json_error, iter_raw
from xlam_hpc.errors import ConfigError, DataError, ShardError
from xlam_hpc.files import sha256_file
from xlam_hpc.progress import progress_bar
from xlam_hpc.rejects import RejectLog
from xlam_hpc.schema import (
    SCHEMA_VERSION,
    Preference,
    RecordInvalid,
    Trajectory,
    decode_record,
    encode_record,
)
from xlam_hpc.shard.checksum import CHECKSUMS
from xlam_hpc.shard.manifest import MANIFEST_NAME, MEMBER_CHECKSUM, Manifest, ShardInfo, load_manifest

__all__ = ["ExtraMembers", "ShardConfig", "ShardSummary", "write_shards"]

ExtraMembers = Callable[[Trajectory | Preference], dict[str, bytes]]
"""Adds members to each sample (e.g. pre-tokenized ids); must return the same extensions every time."""

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_STRIDE = 3  # index columns per member: offset, size, checksum
_CHECKSUM = CHECKSUMS[MEMBER_CHECKSUM]


@dataclass(kw_only=True)
class ShardConfig:
    """Options of `xlam-hpc shard`."""

    inputs: list[str]
    output_dir: str
    samples_per_shard: int = 1000
    overwrite: bool = False
    """Replace an existing dataset in output_dir (its manifest is removed before the new one is written)."""
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    rejects: str | None = None
    """Reject file (default: OUTPUT_DIR/rejects.jsonl)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {self.samples_per_shard}")


@dataclass(kw_only=True)
class ShardSummary:
    output_dir: str
    read: int = 0
    written: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    bytes: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "rejected_total": sum(self.rejected.values()),
            "seconds": round(self.seconds, 3),
        }


def shard_stem(source: str, number: int) -> str:
    """File stem of a shard: '<source>-<number:06d>' with unsafe characters replaced."""
    return f"{_SAFE.sub('_', source)}-{number:06d}"


class _HashingFile:
    """Binary file that hashes what is written, so the shard's sha256 needs no second read."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._f = path.open("wb")
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self._f.write(data)

    def close(self) -> None:
        self._f.close()


class _SourceShards:
    """Rolls tar shards of one source every `per_shard` samples."""

    def __init__(self, source: str, kind: str, tmp: Path, per_shard: int, members: list[str]) -> None:
        self.source, self.kind, self.tmp, self.per_shard, self.members = source, kind, tmp, per_shard, members
        self.count = 0
        self.infos: list[ShardInfo] = []
        self._writer: wds.TarWriter | None = None
        self._file: _HashingFile | None = None
        self._rows: list[list[int]] = []
        self._col = {ext: i for i, ext in enumerate(members)}

    def add(self, sample: dict[str, bytes]) -> None:
        if self._writer is None:
            self._file = _HashingFile(self.tmp / f"{shard_stem(self.source, len(self.infos))}.tar")
            self._writer = wds.TarWriter(self._file, encoder=False, mtime=0, user="xlam", group="xlam")
            self._rows = []
        tar = self._writer.tarstream
        # Predict each member's data offset: TarWriter writes members in sorted key order, each as a
        # 512-byte ustar header (short ASCII names, int mtime: no PAX records) plus data padded to 512.
        pos, row = tar.offset, [-1] * (_STRIDE * len(self.members))
        for ext in sorted(sample):
            size, c = len(sample[ext]), _STRIDE * self._col[ext]
            row[c : c + _STRIDE] = pos + tarfile.BLOCKSIZE, size, _CHECKSUM(sample[ext])
            pos += tarfile.BLOCKSIZE + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        self._writer.write({"__key__": f"{self.count:09d}", **sample})
        if tar.offset != pos:  # the prediction is checked for every sample; rescan if it ever misses
            row = []
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= self.per_shard:
            self.close_shard()

    def close_shard(self) -> None:
        if self._writer is None or self._file is None:
            return
        self._writer.close()
        self._file.close()
        path = Path(self._file.name)
        n = len(self._rows)
        if all(self._rows):
            index = np.asarray(self._rows, dtype=np.int64).reshape(n, _STRIDE * len(self.members))
        else:
            index = build_member_index(path, self.members, n)
        index_path = path.with_suffix(".idx.npy")
        np.save(index_path, index, allow_pickle=False)
        self.infos.append(
            ShardInfo(
                path=path.name,
                source=self.source,
                num_samples=n,
                num_bytes=path.stat().st_size,
                sha256=self._file.sha256.hexdigest(),
                first_index=self.count - n,
                index_path=index_path.name,
                index_sha256=sha256_file(index_path),
            )
        )
        self._writer, self._file = None, None


def build_member_index(path: Path, members: list[str], expected: int) -> np.ndarray:
    """[num_samples, 3*len(members)] int64 (offset, size, checksum) of each member's data, from one scan."""
    col = {ext: i for i, ext in enumerate(members)}
    index = np.full((expected, _STRIDE * len(members)), -1, dtype=np.int64)
    row, key = -1, None
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            sample_key, _, ext = info.name.partition(".")
            if sample_key != key:
                row, key = row + 1, sample_key
            if row >= expected:
                break
            data = tar.extractfile(info).read()  # type: ignore[union-attr]  # members are regular files
            c = _STRIDE * col[ext]
            index[row, c : c + _STRIDE] = info.offset_data, info.size, _CHECKSUM(data)
    if row + 1 != expected or (index < 0).any():
        raise DataError(f"{path}: wrote {expected} samples but found {row + 1} complete ones (disk full?)")
    return index


def _prepare_dir(cfg: ShardConfig) -> tuple[Path, Path]:
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; the shard output (-o) is a directory")
    if cfg.rejects and Path(cfg.rejects).is_dir():
        example = Path(cfg.rejects) / "rejects.jsonl"
        raise ConfigError(f"{cfg.rejects}: is a directory; --rejects is a file (e.g. {example})")
    if (out / MANIFEST_NAME).exists():
        if not cfg.overwrite:
            raise ConfigError(f"{out} already holds a dataset ({MANIFEST_NAME}); pass --overwrite to replace it")
        _old_files(out)  # refuse a manifest we would not delete from before writing anything
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".tmp-shard-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise ConfigError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return out, tmp


def _old_files(out: Path) -> list[Path]:
    """The files the existing manifest lists, each checked to be one of our shard files directly in `out`.

    The manifest is user-controlled input: an entry such as '../x' or '/etc/x' would make --overwrite
    delete a file outside the dataset, so one bad entry refuses the whole deletion.
    """
    previous = load_manifest(out)
    root = out.resolve()
    files = []
    for s in previous.shards:
        for name, suffix in ((s.path, ".tar"), (s.index_path, ".idx.npy")):
            p = out / name
            number = re.fullmatch(rf"[^/]*-([0-9]+){re.escape(suffix)}", name)
            ours = number is not None and name == shard_stem(s.source, int(number[1])) + suffix
            if not ours or p.resolve().parent != root:
                raise ShardError(
                    f"{out / MANIFEST_NAME}: entry '{name}' (source '{s.source}') is not a shard file of this "
                    f"directory ('<source>-NNNNNN.tar' / '.idx.npy'); --overwrite deletes nothing, remove the "
                    "old dataset by hand"
                )
            files.append(p)
    return files


def _commit(out: Path, tmp: Path, manifest: Manifest) -> None:
    old = out / MANIFEST_NAME
    if old.exists():
        stale = _old_files(out)  # every entry is checked before anything is deleted
        old.unlink()  # from here on no manifest points at shards that are about to change
        for p in stale:
            p.unlink(missing_ok=True)
    for f in sorted(tmp.iterdir()):
        f.replace(out / f.name)
    tmp.rmdir()
    manifest.write(out)


def write_shards(
    cfg: ShardConfig,
    *,
    extra: ExtraMembers | None = None,
    extra_members: list[str] | None = None,
    tokenizer_info: dict[str, Any] | None = None,
) -> ShardSummary:
    """Validate every input record and write the shard directory. Bad records are rejected, not fatal."""
    inputs = [Path(p) for p in cfg.inputs]
    for p in inputs:  # a directory, UTF-16 or binary file is named before anything is written
        check_text_file(p)
    out, tmp = _prepare_dir(cfg)
    not_unified = 0
    members = ["json", *(extra_members or [])]
    per_source: dict[str, _SourceShards] = {}
    seen_ids: set[str] = set()
    summary = ShardSummary(output_dir=str(out))
    started = time.perf_counter()
    rejects = RejectLog(Path(cfg.rejects) if cfg.rejects else out / "rejects.jsonl")
    try:
        with rejects:
            for path in inputs:
                items = iter_raw(path, max_record_bytes=cfg.max_record_bytes, parse=False)
                for item in progress_bar(items, desc=f"shard {path.name}", unit="rec", enabled=cfg.progress):
                    summary.read += 1
                    if isinstance(item, RawError):
                        rejects.add(item.path, item.position, item.reason, item.message)
                        continue
                    try:
                        rec = decode_record(item.obj) if isinstance(item.obj, dict | bytes) else None
                    except RecursionError:
                        rejects.add(item.path, item.position, *explain_json_error(b"[" * 100_000))
                        continue
                    except RecordInvalid as exc:
                        reason, message = exc.reason, str(exc)
                        if reason in ("invalid_json", "invalid_utf8") and isinstance(item.obj, bytes):
                            reason, message = explain_json_error(item.obj)
                            message = message or str(exc)
                        elif _is_raw(item.obj):
                            not_unified += 1
                            message += f"; {_RAW_HINT}"
                        rejects.add(item.path, item.position, reason, message, _id_of(item.obj))
                        continue
                    if rec is None:
                        rejects.add(
                            item.path,
                            item.position,
                            "not_an_object",
                            "expected a unified record (JSON object)",
                        )
                        continue
                    kind = "preference" if isinstance(rec, Preference) else "trajectory"
                    if rec.unique_trajectory_id in seen_ids:
                        rejects.add(
                            item.path,
                            item.position,
                            "duplicate_id",
                            "id already sharded",
                            rec.unique_trajectory_id,
                        )
                        continue
                    shards = per_source.get(rec.source)
                    if shards is None:
                        shards = per_source[rec.source] = _SourceShards(
                            rec.source, kind, tmp, cfg.samples_per_shard, members
                        )
                    if shards.kind != kind:
                        rejects.add(
                            item.path,
                            item.position,
                            "mixed_kinds",
                            f"source '{rec.source}' holds {shards.kind} records; this one is a {kind}",
                            rec.unique_trajectory_id,
                        )
                        continue
                    seen_ids.add(rec.unique_trajectory_id)
                    sample = {"json": encode_record(rec), **(extra(rec) if extra else {})}
                    shards.add(sample)
                    summary.written += 1
            for shards in per_source.values():
                shards.close_shard()
        if summary.written == 0:
            hint = f" ({not_unified} not unified records: {_RAW_HINT})" if not_unified else ""
            raise DataError(f"no valid record in {', '.join(map(str, inputs))}{hint}; see {rejects.path}")
        infos = [i for name in sorted(per_source) for i in per_source[name].infos]
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            shards=infos,
            sources={
                name: {"num_samples": s.count, "num_shards": len(s.infos), "kind": s.kind}
                for name, s in sorted(per_source.items())
            },
            members=members,
            member_checksum=MEMBER_CHECKSUM,
            tokenizer=tokenizer_info,
        )
        _commit(out, tmp, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.rejected = dict(sorted(rejects.counts.items()))
    summary.shards = len(infos)
    summary.bytes = sum(i.num_bytes for i in infos)
    summary.sources = {name: s.count for name, s in sorted(per_source.items())}
    summary.seconds = time.perf_counter() - started
    return summary


_RAW_HINT = "shard reads unified records: run `xlam-hpc convert` on the raw file first"


def _is_raw(obj: Any) -> bool:
    """A record without the unified keys: raw dataset input given to `shard` instead of `convert`."""
    if isinstance(obj, bytes):
        is_object = obj.lstrip().startswith(b"{")
        return is_object and b'"unique_trajectory_id"' not in obj and b'"conversation"' not in obj
    return isinstance(obj, dict) and "unique_trajectory_id" not in obj and "conversation" not in obj


def _id_of(obj: Any) -> str | None:
    if isinstance(obj, bytes):  # best effort: the id of a line that failed validation
        try:
            obj = json.loads(obj)
        except (ValueError, RecursionError):
            return None
    return obj.get("unique_trajectory_id") if isinstance(obj, dict) else None
