"""convert stage: raw files → validated unified JSONL, with a reject file and a summary.

Streaming: records are read, converted, validated and written one at a time (constant memory apart
from the 8-byte-per-record sets used for duplicate detection). The output appears atomically
(temp file + rename) so a killed run never leaves a half-written OUT.jsonl behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from xlam_hpc.convert.base import Converter, Reject
from xlam_hpc.convert.detect import detect_format, get_converter
from xlam_hpc.convert.reader import DEFAULT_MAX_RECORD_BYTES, RawError, RawRecord, iter_raw
from xlam_hpc.errors import ConfigError, DataError
from xlam_hpc.progress import progress_bar
from xlam_hpc.rejects import RejectLog
from xlam_hpc.schema import (
    Preference,
    RecordInvalid,
    Trajectory,
    encode_record,
    to_actionstudio,
    validate_preference,
    validate_trajectory,
)

__all__ = ["ConvertConfig", "ConvertSummary", "content_hash", "convert_files"]


@dataclass(kw_only=True)
class ConvertConfig:
    """Options of `xlam-hpc convert`."""

    inputs: list[str]
    output: str
    format: str = "auto"
    """A name from CONVERTERS, or 'auto' (detected per input file from its first records)."""
    source: str | None = None
    """Override the `source` of every emitted record."""
    min_score: float | None = None
    """Drop records whose score is below this (records without a score are kept)."""
    dedup: bool = False
    """Drop exact duplicates by normalized content hash (whitespace-folded conversation + tools)."""
    strict: bool = False
    """Exit non-zero if any record is rejected."""
    emit: Literal["unified", "actionstudio"] = "unified"
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    rejects: str | None = None
    """Reject file (default: OUT with .rejects.jsonl)."""
    summary: str | None = None
    """Summary JSON (default: OUT with .summary.json)."""
    progress: bool = True

    def rejects_path(self) -> Path:
        return Path(self.rejects) if self.rejects else _sibling(Path(self.output), ".rejects.jsonl")

    def summary_path(self) -> Path:
        return Path(self.summary) if self.summary else _sibling(Path(self.output), ".summary.json")


def _sibling(out: Path, suffix: str) -> Path:
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + suffix)


@dataclass(kw_only=True)
class ConvertSummary:
    """Counts of one conversion (printed and written as JSON)."""

    output: str
    read: int = 0
    converted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    filtered_min_score: int = 0
    duplicates_removed: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "read": self.read,
            "converted": self.converted,
            "rejected": self.num_rejected,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "filtered_min_score": self.filtered_min_score,
            "duplicates_removed": self.duplicates_removed,
            "files": self.files,
            "seconds": round(self.seconds, 3),
        }


_WS = re.compile(r"\s+")


def _fold(value: Any) -> Any:
    if isinstance(value, str):
        return _WS.sub(" ", value).strip()
    if isinstance(value, list):
        return [_fold(v) for v in value]
    if isinstance(value, dict):
        return {k: _fold(v) for k, v in value.items()}
    return value


def content_hash(rec: Trajectory | Preference) -> bytes:
    """8-byte hash of the content that matters for training (ids, source, score and meta excluded)."""
    data = msgspec.to_builtins(rec)
    for key in ("unique_trajectory_id", "source", "score", "split", "meta"):
        data.pop(key, None)
    for turn in data["conversation"]:
        for call in turn.get("tool_calls", ()):
            call.pop("id", None)  # generated ids differ between otherwise equal records
        turn.pop("tool_call_id", None)
    blob = json.dumps(_fold(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(blob.encode(), digest_size=8).digest()


def _check_writable(path: Path, what: str) -> None:
    """ConfigError now, not a traceback after the work is done, when `path` cannot be written."""
    existed = path.exists()
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    if not existed:
        path.unlink()


def _open_output(path: Path) -> tuple[Path, Any]:
    tmp = path.with_name(path.name + ".tmp")
    try:
        return tmp, tmp.open("wb")
    except OSError as exc:
        raise ConfigError(f"cannot write output {path}: {exc.strerror or exc}") from None


def _records(conv: Converter, raw: RawRecord) -> Iterator[Trajectory | Preference | Reject]:
    try:
        yield from conv.convert(raw)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        if isinstance(exc, Reject):
            raise
        # A converter bug on odd input must not stop the run: report it as this record's rejection.
        raise Reject("converter_error", f"{type(exc).__name__}: {exc}") from exc


class _Output:
    """Validates, filters, dedups and writes emitted records; counts everything in the summary."""

    def __init__(self, cfg: ConvertConfig, out: Any, rejects: RejectLog, summary: ConvertSummary) -> None:
        self.cfg, self.out, self.rejects, self.summary = cfg, out, rejects, summary
        self.seen_ids: set[bytes] = set()
        self.seen_content: set[bytes] = set()

    def reject(
        self, raw: RawRecord, exc: Reject | RecordInvalid, stats: Counter[str], record_id: str | None = None
    ) -> None:
        stats["rejected"] += 1
        item = getattr(exc, "item", None)
        position = raw.position if item is None else f"{raw.position} item {item}"
        self.rejects.add(raw.path, position, exc.reason, str(exc), record_id)

    def emit(self, rec: Trajectory | Preference, raw: RawRecord, stats: Counter[str]) -> None:
        try:
            if isinstance(rec, Preference):
                validate_preference(rec)
            else:
                validate_trajectory(rec)
        except RecordInvalid as exc:
            self.reject(raw, exc, stats, rec.unique_trajectory_id)
            return
        if self.cfg.min_score is not None and rec.score is not None and rec.score < self.cfg.min_score:
            self.summary.filtered_min_score += 1
            return
        if self.cfg.dedup:
            digest = content_hash(rec)
            if digest in self.seen_content:
                self.summary.duplicates_removed += 1
                return
            self.seen_content.add(digest)
        id_digest = hashlib.blake2b(rec.unique_trajectory_id.encode(), digest_size=8).digest()
        if id_digest in self.seen_ids:
            self.reject(
                raw,
                Reject("duplicate_id", "unique_trajectory_id already emitted earlier"),
                stats,
                rec.unique_trajectory_id,
            )
            return
        self.seen_ids.add(id_digest)
        line = encode_record(rec) if self.cfg.emit == "unified" else msgspec.json.encode(to_actionstudio(rec))
        self.out.write(line + b"\n")
        stats["converted"] += 1
        self.summary.converted += 1


def convert_files(cfg: ConvertConfig, *, log: Any = print) -> ConvertSummary:
    """Run the conversion described by `cfg`. Never raises for bad records; raises DataError/ConfigError for
    unusable inputs (missing files, unknown format, undetectable format, unwritable output)."""
    inputs = [Path(p) for p in cfg.inputs]
    for p in inputs:
        if not p.is_file():
            raise DataError(f"{p}: input file not found")
    fixed = None if cfg.format == "auto" else get_converter(cfg.format)
    out_path = Path(cfg.output)
    _check_writable(out_path, "output")
    _check_writable(cfg.rejects_path(), "rejects")
    _check_writable(cfg.summary_path(), "summary")
    tmp, out = _open_output(out_path)
    rejects = RejectLog(cfg.rejects_path())
    summary = ConvertSummary(output=str(out_path))
    output = _Output(cfg, out, rejects, summary)
    started = time.perf_counter()
    total_bytes = sum(p.stat().st_size for p in inputs)
    bar = progress_bar(total=total_bytes, unit="B", unit_scale=True, desc="convert", enabled=cfg.progress)
    try:
        for path in inputs:
            try:
                fmt = fixed if fixed is not None else detect_format(path, max_record_bytes=cfg.max_record_bytes)
            except DataError as exc:  # one unrecognized file must not stop the others
                log(f"error: {exc}")
                rejects.add(str(path), "file", "undetected_format", str(exc))
                summary.files[str(path)] = {"format": None, "read": 0, "converted": 0, "rejected": 1}
                continue
            log(f"{path}: format {fmt.name}" + (" (auto-detected)" if fixed is None else ""))
            conv = fmt(source=cfg.source)
            stats: Counter[str] = Counter()
            for item in iter_raw(path, max_record_bytes=cfg.max_record_bytes):
                stats["read"] += 1
                if isinstance(item, RawError):
                    stats["rejected"] += 1
                    rejects.add(item.path, item.position, item.reason, item.message)
                    continue
                try:
                    records = list(_records(conv, item))
                except Reject as exc:
                    output.reject(item, exc, stats)
                    continue
                for rec in records:  # a converter may reject one of several records of a raw item
                    if isinstance(rec, Reject):
                        output.reject(item, rec, stats)
                    else:
                        output.emit(rec, item, stats)
            bar.update(path.stat().st_size)
            summary.read += stats["read"]
            summary.files[str(path)] = {"format": fmt.name, **{k: stats[k] for k in ("read", "converted", "rejected")}}
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written OUT.jsonl.tmp behind
        raise
    finally:
        bar.close()
        out.close()
        rejects.close()
    tmp.replace(out_path)
    summary.rejected = rejects.counts
    summary.seconds = time.perf_counter() - started
    cfg.summary_path().write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return summary
