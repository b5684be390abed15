"""Read raw input files as located records: JSONL line by line (constant memory), or one JSON document.

Every record carries its file and position so any rejection can name them. Bad lines (non-UTF-8,
truncated JSON, over the size limit) come out as `RawError` items in the same stream instead of
exceptions, so the caller counts them and keeps going.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["DEFAULT_MAX_RECORD_BYTES", "RawError", "RawRecord", "iter_raw", "sniff_layout"]

DEFAULT_MAX_RECORD_BYTES = 32 * 1024 * 1024
_CHUNK = 1 << 20


class _Located:
    """`position` and `where` of anything with a path, an index and a kind."""

    __slots__ = ()
    path: str
    index: int
    kind: str

    @property
    def position(self) -> str:
        """'line 12', 'record 3' or 'document' (the file is in `path`)."""
        return {"line": f"line {self.index}", "element": f"record {self.index}", "document": "document"}[self.kind]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.position}"


@dataclass(frozen=True, slots=True)
class RawRecord(_Located):
    """One parsed input object and where it came from."""

    path: str
    index: int
    """1-based line number for JSONL; 0-based element index for a JSON array; 0 for a single object."""
    obj: Any
    kind: str = "line"
    """'line' (JSONL), 'element' (JSON array) or 'document' (one JSON object per file)."""


@dataclass(frozen=True, slots=True)
class RawError(_Located):
    """An input position that could not be parsed."""

    path: str
    index: int
    reason: str
    message: str
    kind: str = "line"


def sniff_layout(path: Path) -> str:
    """'jsonl', 'json' (an array, or one document spread over lines) or 'empty'."""
    with path.open("rb") as f:
        head = f.read(_CHUNK).lstrip()
    if not head:
        return "empty"
    if head.startswith(b"["):
        return "json"
    try:
        json.loads(head.split(b"\n", 1)[0])
        return "jsonl"
    except (ValueError, UnicodeDecodeError):
        pass
    # First line is not a whole object: a pretty-printed document, or JSONL with a bad first line.
    try:
        with path.open("rb") as f:
            json.load(f)
        return "json"
    except (ValueError, UnicodeDecodeError):
        return "jsonl"


def _read_line(f: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """Next line (without newline) and whether it exceeded `limit`; skips the rest of an oversized line."""
    line = f.readline(limit + 1)
    if len(line) <= limit or line.endswith(b"\n"):
        return line, False
    while line and not line.endswith(b"\n"):  # drain the oversized line in chunks
        line = f.readline(_CHUNK)
    return b"", True


def _iter_jsonl(path: Path, max_bytes: int, parse: bool = True) -> Iterator[RawRecord | RawError]:
    name = str(path)
    with path.open("rb") as f:
        lineno = 0
        while True:
            line, too_big = _read_line(f, max_bytes)
            lineno += 1
            if too_big:
                yield RawError(name, lineno, "record_too_large", f"line is larger than {max_bytes} bytes (limit)")
                continue
            if not line:
                return
            if not line.strip():
                continue
            if not parse:  # the caller decodes the bytes itself (msgspec, typed: faster than json.loads)
                yield RawRecord(name, lineno, line, "line")
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawError(name, lineno, "invalid_utf8", f"not UTF-8 at byte {exc.start}")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawError(name, lineno, "invalid_json", f"invalid JSON at column {exc.colno}: {exc.msg}")
                continue
            yield RawRecord(name, lineno, obj, "line")


def _iter_json(path: Path, max_bytes: int) -> Iterator[RawRecord | RawError]:
    # A JSON document must be parsed whole; keep huge corpora in JSONL for constant memory.
    name = str(path)
    size = path.stat().st_size
    if size > max_bytes * 64:
        yield RawError(name, 0, "file_too_large", f"JSON document of {size} bytes; convert it to JSONL", "document")
        return
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        yield RawError(name, line, "invalid_utf8", f"not UTF-8 at byte {exc.start}", "line")
        return
    except json.JSONDecodeError as exc:
        yield RawError(name, exc.lineno, "invalid_json", f"invalid JSON document: {exc.msg} (column {exc.colno})")
        return
    if isinstance(data, list):
        for i, obj in enumerate(data):
            yield RawRecord(name, i, obj, "element")
    else:
        yield RawRecord(name, 0, data, "document")


def iter_raw(
    path: str | Path, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, parse: bool = True
) -> Iterator[RawRecord | RawError]:
    """Located raw records of one file (JSONL, JSON array or single JSON document). With parse=False,
    JSONL lines come as raw bytes in `obj` (arrays and documents are always parsed)."""
    p = Path(path)
    layout = sniff_layout(p)
    if layout == "empty":
        yield RawError(str(p), 0, "empty_file", "file is empty", "document")
    elif layout == "jsonl":
        yield from _iter_jsonl(p, max_record_bytes, parse)
    else:
        yield from _iter_json(p, max_record_bytes)
