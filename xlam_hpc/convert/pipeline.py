"""convert stage: raw files → validated unified JSONL, with a reject file and a summary.

Streaming: records are read, converted, validated and written one at a time (constant memory apart
from the 8-byte-per-record sets used for duplicate detection). The output appears atomically
(temp file + rename) so a killed run never leaves a half-written OUT.jsonl behind.

Inputs: files, and directories (every `*.json`/`*.jsonl` file below them, or those matching `--glob`,
recursively, in sorted order; hidden files and folders are skipped). The output must not be one of the
inputs, and an existing output is replaced only with `overwrite`.

Counting is per record: a raw object that holds several trajectories (a ToolAlpaca toolset) counts each,
so `read` (records in) = converted + rejected + filtered (below --min-score) + duplicates always holds.

Ids: a `unique_trajectory_id` is namespaced by source and file ('<source>---<file stem>---<id>'); a
record whose converter kept the dataset's own id gets that prefix and the id is kept in meta["original_id"]:
the same raw id in two files is two records, not a duplicate (dedup stays content-based). An id that has
the '---' shape already (a unified file converted again) is kept.

Kinds: SFT trajectories and DPO pairs never share a file. When one run yields both, trajectories go to
OUT.jsonl and pairs to OUT.preference.jsonl (both named in the summary); a run of one kind writes OUT.jsonl.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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

__all__ = ["ConvertConfig", "ConvertSummary", "content_hash", "convert_files", "expand_inputs"]

DEFAULT_GLOBS = ("*.json", "*.jsonl")
"""Files taken from a directory input when no `--glob` is given."""


@dataclass(kw_only=True)
class ConvertConfig:
    """Options of `xlam-hpc convert`."""

    inputs: list[str]
    """Files or directories (searched recursively, see `glob`)."""
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
    glob: str | None = None
    """Which files of a directory input to read (matched against the path below the directory, e.g.
    '*_DFS_*.json' or 'G1_answer/*.json'); default: *.json and *.jsonl."""
    overwrite: bool = False
    """Replace an existing output (OUT.jsonl / OUT.preference.jsonl); without it the run is refused."""
    messages_key: str | None = None
    """`--messages-key`: the top-level key holding OpenAI-style messages (implies the `openai` format);
    default: found per record (`messages`, `conversations`, `traj`, `dialog`, ...)."""

    def preference_path(self) -> Path:
        """Where DPO pairs go when the same run also yields SFT trajectories."""
        return _sibling(Path(self.output), ".preference.jsonl")

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
    """Records in (per record: each trajectory of a raw object that holds several counts)."""
    raw_objects: int = 0
    """Raw JSON objects/lines read (a ToolAlpaca toolset is one)."""
    converted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    filtered_min_score: int = 0
    duplicates_removed: int = 0
    tools_inferred: int = 0
    """Converted records whose tools were inferred from their calls (meta["tools_inferred"])."""
    kinds: Counter[str] = field(default_factory=Counter)
    """Converted records per kind ('trajectory', 'preference')."""
    outputs: dict[str, str] = field(default_factory=dict)
    """Output file per kind written."""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def balanced(self) -> bool:
        """in = converted + rejected + filtered + duplicates."""
        return self.read == self.converted + self.num_rejected + self.filtered_min_score + self.duplicates_removed

    def balance_line(self) -> str:
        """The count identity, printed by `convert`."""
        return (
            f"records in {self.read} = converted {self.converted} + rejected {self.num_rejected} + "
            f"below --min-score {self.filtered_min_score} + duplicates {self.duplicates_removed}"
            + ("" if self.balanced else " (DOES NOT BALANCE: a bug, please report)")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "outputs": self.outputs,
            "read": self.read,
            "raw_objects": self.raw_objects,
            "converted": self.converted,
            "rejected": self.num_rejected,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "filtered_min_score": self.filtered_min_score,
            "duplicates_removed": self.duplicates_removed,
            "balanced": self.balanced,
            "tools_inferred": self.tools_inferred,
            "kinds": dict(sorted(self.kinds.items())),
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


def _hidden(rel: PurePosixPath) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def expand_inputs(inputs: list[str], glob: str | None = None) -> list[Path]:
    """The files to read: each file as given; each directory's files below it (recursive, sorted by path,
    hidden ones skipped) that match `glob` (default *.json / *.jsonl). DataError for a missing input or a
    directory without a matching file."""
    out: list[Path] = []
    patterns = (glob,) if glob else DEFAULT_GLOBS
    for name in inputs:
        p = Path(name)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for f in files:
                    rel = PurePosixPath(Path(root, f).relative_to(p).as_posix())
                    if not _hidden(rel) and any(rel.match(pat) for pat in patterns):
                        found.append(Path(root, f))
            if not found:
                raise DataError(f"{p}: directory has no input file matching {' or '.join(patterns)} (see --glob)")
            out.extend(sorted(found, key=lambda q: q.as_posix()))
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"{p}: input file not found")
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _check_outputs(cfg: ConvertConfig, inputs: list[Path]) -> None:
    """Refuse to write over an input, or over an existing output without `overwrite`."""
    out = Path(cfg.output)
    written = {
        "output": out,
        "DPO output": cfg.preference_path(),
        "rejects": cfg.rejects_path(),
        "summary": cfg.summary_path(),
    }
    for what, path in written.items():
        for p in inputs:
            if _same_file(path, p) or path.resolve() == p.resolve():
                raise ConfigError(f"{path}: the {what} file would overwrite the input {p}; choose another -o")
    for what, path in written.items():
        _check_writable(path, what)
    if not cfg.overwrite:
        for what, path in (("output", out), ("DPO output", cfg.preference_path())):
            if path.exists():
                raise ConfigError(f"{path}: {what} exists; pass --overwrite to replace it, or choose another -o")


def _records(conv: Converter, raw: RawRecord) -> Iterator[Trajectory | Preference | Reject]:
    try:
        yield from conv.convert(raw)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        if isinstance(exc, Reject):
            raise
        # A converter bug on odd input must not stop the run: report it as this record's rejection.
        raise Reject("converter_error", f"{type(exc).__name__}: {exc}") from exc


def _namespace(rec: Trajectory | Preference, raw: RawRecord) -> None:
    """'<source>---<file stem>---' before a dataset's own id, which goes to meta["original_id"]. Ids that
    already have that '---' shape (made by `make_id`, or read back from a unified file) are kept as they are."""
    if "---" not in rec.unique_trajectory_id:
        prefix = f"{rec.source}---{Path(raw.path).stem}---"
        rec.meta.setdefault("original_id", rec.unique_trajectory_id)
        rec.unique_trajectory_id = prefix + rec.unique_trajectory_id


_COUNTS = ("read", "converted", "rejected", "filtered_min_score", "duplicates_removed", "tools_inferred")


class _Output:
    """Validates, filters, dedups and writes emitted records; counts everything in the summary."""

    def __init__(self, cfg: ConvertConfig, outs: dict[str, Any], rejects: RejectLog, summary: ConvertSummary) -> None:
        self.cfg, self.outs, self.rejects, self.summary = cfg, outs, rejects, summary
        self.seen_ids: dict[bytes, int] = {}  # id digest -> index of the input file that emitted it
        self.seen_content: set[bytes] = set()
        self.file_index = 0
        self.file_names: list[str] = []

    def reject(
        self, raw: RawRecord, exc: Reject | RecordInvalid, stats: Counter[str], record_id: str | None = None
    ) -> None:
        stats["rejected"] += 1
        item = getattr(exc, "item", None)
        position = raw.position if item is None else f"{raw.position} item {item}"
        self.rejects.add(raw.path, position, exc.reason, str(exc), record_id)

    def emit(self, rec: Trajectory | Preference, raw: RawRecord, stats: Counter[str]) -> None:
        _namespace(rec, raw)
        try:
            if isinstance(rec, Preference):
                validate_preference(rec)
            else:
                validate_trajectory(rec)
        except RecordInvalid as exc:
            self.reject(raw, exc, stats, rec.unique_trajectory_id)
            return
        if self.cfg.min_score is not None and rec.score is not None and rec.score < self.cfg.min_score:
            stats["filtered_min_score"] += 1
            return
        if self.cfg.dedup:
            digest = content_hash(rec)
            if digest in self.seen_content:
                stats["duplicates_removed"] += 1
                return
            self.seen_content.add(digest)
        id_digest = hashlib.blake2b(rec.unique_trajectory_id.encode(), digest_size=8).digest()
        first = self.seen_ids.get(id_digest)
        if first is not None:
            where = "" if first == self.file_index else f" (from {self.file_names[first]}: same file name)"
            message = f"unique_trajectory_id already emitted earlier{where}"
            self.reject(raw, Reject("duplicate_id", message), stats, rec.unique_trajectory_id)
            return
        self.seen_ids[id_digest] = self.file_index
        kind = "preference" if isinstance(rec, Preference) else "trajectory"
        line = encode_record(rec) if self.cfg.emit == "unified" else msgspec.json.encode(to_actionstudio(rec))
        self.outs[kind].write(line + b"\n")
        stats["converted"] += 1
        stats["tools_inferred"] += bool(rec.meta.get("tools_inferred"))
        self.summary.kinds[kind] += 1


def _convert_file(
    path: Path, fmt: type[Converter], cfg: ConvertConfig, output: _Output, rejects: RejectLog
) -> Counter[str]:
    conv = fmt(source=cfg.source, messages_key=cfg.messages_key) if cfg.messages_key else fmt(source=cfg.source)
    stats: Counter[str] = Counter()
    for item in iter_raw(path, max_record_bytes=cfg.max_record_bytes):
        stats["raw_objects"] += 1
        if isinstance(item, RawError):
            stats["read"] += 1
            stats["rejected"] += 1
            rejects.add(item.path, item.position, item.reason, item.message)
            continue
        try:
            records = list(_records(conv, item))
        except Reject as exc:
            stats["read"] += 1
            output.reject(item, exc, stats)
            continue
        for rec in records:  # a converter may reject one of several records of a raw item
            stats["read"] += 1
            if isinstance(rec, Reject):
                output.reject(item, rec, stats)
            else:
                output.emit(rec, item, stats)
    return stats


def _finish_outputs(cfg: ConvertConfig, tmps: dict[str, Path], summary: ConvertSummary, log: Any) -> None:
    """Rename the temp outputs: one kind → OUT.jsonl; both → trajectories OUT.jsonl, pairs OUT.preference.jsonl."""
    out, pref = Path(cfg.output), cfg.preference_path()
    if summary.kinds["trajectory"] and summary.kinds["preference"]:
        tmps["trajectory"].replace(out)
        tmps["preference"].replace(pref)
        summary.outputs = {"trajectory": str(out), "preference": str(pref)}
        log(
            f"SFT trajectories and DPO pairs are not mixed in one file: {summary.kinds['trajectory']} trajectories "
            f"in {out}, {summary.kinds['preference']} preference pairs in {pref}"
        )
        return
    kind = "preference" if summary.kinds["preference"] else "trajectory"
    tmps[kind].replace(out)
    tmps["trajectory" if kind == "preference" else "preference"].unlink(missing_ok=True)
    if pref.exists():  # a split output of an earlier run (only reachable with --overwrite)
        pref.unlink()
        log(f"removed {pref} (an earlier run's DPO output; this run wrote one kind of record to {out})")
    summary.outputs = {kind: str(out)}


def convert_files(cfg: ConvertConfig, *, log: Any = print) -> ConvertSummary:
    """Run the conversion described by `cfg`. Never raises for bad records; raises DataError/ConfigError for
    unusable inputs (missing files, unknown format, undetectable format, unwritable output)."""
    inputs = expand_inputs(cfg.inputs, cfg.glob)
    if cfg.messages_key and cfg.format not in ("auto", "openai"):
        raise ConfigError(f"--messages-key is an option of --format openai, not of '{cfg.format}'")
    fixed = get_converter("openai") if cfg.messages_key else None if cfg.format == "auto" else get_converter(cfg.format)
    out_path = Path(cfg.output)
    _check_outputs(cfg, inputs)
    tmps: dict[str, Path] = {}
    outs: dict[str, Any] = {}
    for kind, path in (("trajectory", out_path), ("preference", cfg.preference_path())):
        tmps[kind], outs[kind] = _open_output(path)
    rejects = RejectLog(cfg.rejects_path())
    summary = ConvertSummary(output=str(out_path))
    output = _Output(cfg, outs, rejects, summary)
    started = time.perf_counter()
    total_bytes = sum(p.stat().st_size for p in inputs)
    bar = progress_bar(total=total_bytes, unit="B", unit_scale=True, desc="convert", enabled=cfg.progress)
    totals: Counter[str] = Counter()
    try:
        for path in inputs:
            output.file_index = len(output.file_names)
            output.file_names.append(str(path))
            try:
                fmt = fixed if fixed is not None else detect_format(path, max_record_bytes=cfg.max_record_bytes)
            except DataError as exc:  # one unrecognized file must not stop the others
                log(f"error: {exc}")
                rejects.add(str(path), "file", "undetected_format", str(exc))
                stats = Counter(read=1, rejected=1)  # the file counts as one record in, rejected
                totals.update(stats)
                summary.files[str(path)] = {"format": None, **{k: stats[k] for k in _COUNTS}}
                continue
            log(f"{path}: format {fmt.name}" + (" (auto-detected)" if fixed is None else ""))
            stats = _convert_file(path, fmt, cfg, output, rejects)
            bar.update(path.stat().st_size)
            totals.update(stats)
            summary.files[str(path)] = {"format": fmt.name, **{k: stats[k] for k in _COUNTS}}
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)  # never leave a half-written OUT.jsonl.tmp behind
        raise
    finally:
        bar.close()
        for f in outs.values():
            f.close()
        rejects.close()
    summary.read, summary.raw_objects = totals["read"], totals["raw_objects"]
    summary.converted, summary.tools_inferred = totals["converted"], totals["tools_inferred"]
    summary.filtered_min_score, summary.duplicates_removed = totals["filtered_min_score"], totals["duplicates_removed"]
    _finish_outputs(cfg, tmps, summary, log)
    summary.rejected = rejects.counts
    summary.seconds = time.perf_counter() - started
    cfg.summary_path().write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return summary
