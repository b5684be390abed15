"""Read raw input files as located records: JSONL line by line (constant memory), or one JSON document.

Every record carries its file and position so any rejection can name them. Bad lines (non-UTF-8,
truncated JSON, non-JSON numbers such as NaN, nesting too deep to parse, over the size limit) come out as
`RawError` items in the same stream instead of exceptions, so the caller counts them and keeps going; a JSON
array that does not parse as a whole is read element by element, so its good records are kept. A file that is
not UTF-8 JSON text at all (UTF-16, binary, gzip, a directory) raises DataError naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from xlam_hpc.errors import DataError

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "RawError",
    "RawRecord",
    "check_text_file",
    "explain_json_error",
    "iter_raw",
    "sniff_layout",
]

DEFAULT_MAX_RECORD_BYTES = 32 * 1024 * 1024
_CHUNK = 1 << 20
_UTF8_BOM = b"\xef\xbb\xbf"


class _NonFiniteNumber(ValueError):
    """A NaN/Infinity literal: Python's json accepts it, JSON (and every other reader) does not."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _no_constant(name: str) -> Any:
    raise _NonFiniteNumber(name)


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _loads(text: str) -> Any:
    """json.loads that refuses NaN/Infinity (raises _NonFiniteNumber); may raise RecursionError."""
    obj, end = _DECODER.raw_decode(text, _skip_ws(text, 0))
    if _skip_ws(text, end) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip_ws(text, end))
    return obj


def _bad_json(exc: BaseException) -> tuple[str, str]:
    """(reason, message) of a JSON parse failure of one record."""
    if isinstance(exc, _NonFiniteNumber):
        return "non_json_number", (
            f"non-JSON number {exc.name} (JSON has no NaN/Infinity; write null or a string, e.g. allow_nan=False "
            "when the file is made with Python's json)"
        )
    if isinstance(exc, RecursionError):
        return "too_deeply_nested", "JSON nested too deeply to parse (hundreds of levels of [ or {)"
    if isinstance(exc, json.JSONDecodeError):
        return "invalid_json", f"invalid JSON at column {exc.colno}: {exc.msg}"
    return "invalid_json", f"invalid JSON: {exc}"


def explain_json_error(line: bytes) -> tuple[str, str]:
    """(reason, message) for a JSON line another parser (msgspec) refused: names NaN/Infinity, deep nesting,
    non-UTF-8 bytes and the column as this module does; ('invalid_json', '') when Python's json reads it."""
    try:
        _loads(line.removeprefix(_UTF8_BOM).decode("utf-8"))
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"not UTF-8 at byte {exc.start}"
    except (ValueError, RecursionError) as exc:
        return _bad_json(exc)
    return "invalid_json", ""


def check_text_file(path: Path) -> None:
    """DataError naming `path` when it is not a readable file of UTF-8 text: a directory, a missing or
    unreadable file, UTF-16/UTF-32 (byte-order mark or NUL bytes between ASCII), gzip, or other binary."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file (give the .jsonl/.json files inside it)")
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise DataError(f"{path}: input file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    how = "convert it to UTF-8 first, e.g. iconv -f {enc} -t UTF-8 IN > OUT"
    if head.startswith(b"\x1f\x8b"):
        raise DataError(f"{path}: file is gzip-compressed; decompress it first (gunzip -k {path.name})")
    if head[257:262] == b"ustar":
        raise DataError(f"{path}: a tar archive (a shard?), not JSON/JSONL text")
    nul = head.find(b"\x00")
    if nul >= 0:
        enc = _wide_encoding(head)
        if enc is not None:
            mark = "byte-order mark" if enc in ("UTF-16", "UTF-32") else "NUL bytes between ASCII characters"
            raise DataError(f"{path}: file is {enc} text ({mark}), not UTF-8; " + how.format(enc=enc))
        raise DataError(f"{path}: binary file (NUL byte at byte {nul}), not JSON/JSONL text")


def _wide_encoding(head: bytes) -> str | None:
    """'UTF-16', 'UTF-32' (byte-order mark), 'UTF-16LE', ... (JSON is mostly ASCII, so UTF-16/32 text without
    a mark has NUL bytes at fixed places in every 2/4 bytes), else None (binary)."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    s = head[: min(len(head), 512) // 4 * 4]
    if not s:
        return None
    for enc, zero in (("UTF-32LE", (1, 2, 3)), ("UTF-32BE", (0, 1, 2)), ("UTF-16LE", (1, 3)), ("UTF-16BE", (0, 2))):
        share = [s[k::4].count(0) / len(s[k::4]) for k in range(4)]
        if all(share[k] >= 0.7 for k in zero) and all(share[k] <= 0.3 for k in range(4) if k not in zero):
            return enc
    return None


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
        head = f.read(_CHUNK).removeprefix(_UTF8_BOM).lstrip()
    if not head:
        return "empty"
    if head.startswith(b"[") or head.split(b"\n", 1)[0].strip() == b"{":  # an array, a pretty-printed object
        return "json"
    try:
        json.loads(head.split(b"\n", 1)[0])
        return "jsonl"
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    # First line is not a whole object: a pretty-printed document, or JSONL with a bad first line.
    try:
        with path.open("rb") as f:
            json.loads(f.read().removeprefix(_UTF8_BOM))
        return "json"
    except (ValueError, UnicodeDecodeError, RecursionError):
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
            if lineno == 1:
                line = line.removeprefix(_UTF8_BOM)
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
                obj = _loads(text)
            except (ValueError, RecursionError) as exc:
                yield RawError(name, lineno, *_bad_json(exc))
                continue
            yield RawRecord(name, lineno, obj, "line")


def _iter_json(path: Path, max_bytes: int) -> Iterator[RawRecord | RawError]:
    # A JSON document must be parsed whole; keep huge corpora in JSONL for constant memory.
    name = str(path)
    size = path.stat().st_size
    if size > max_bytes * 64:
        yield RawError(name, 0, "file_too_large", f"JSON document of {size} bytes; convert it to JSONL", "document")
        return
    raw = path.read_bytes().removeprefix(_UTF8_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        yield RawError(name, line, "invalid_utf8", f"not UTF-8 at byte {exc.start}", "line")
        return
    try:
        data = _loads(text)
    except (ValueError, RecursionError) as exc:
        start = _skip_ws(text, 0)
        if text.startswith("[", start):  # read it element by element: the good records are kept
            yield from _iter_elements(name, text, start + 1)
        elif isinstance(exc, json.JSONDecodeError):
            truncated = " (the file ends too early: truncated?)" if exc.pos >= len(text.rstrip()) else ""
            yield RawError(
                name, exc.lineno, "invalid_json", f"invalid JSON document: {exc.msg} (column {exc.colno}){truncated}"
            )
        else:
            yield RawError(name, 0, *_bad_json(exc), "document")
        return
    if isinstance(data, list):
        for i, obj in enumerate(data):
            yield RawRecord(name, i, obj, "element")
    else:
        yield RawRecord(name, 0, data, "document")


_WS = " \t\n\r"


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _value_end(text: str, i: int) -> int:
    """Where the JSON value starting at `i` ends: the next ',' or ']' outside strings and brackets (no
    recursion, so it also steps over values nested too deeply to parse); len(text) when the text ends first."""
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "[{":
            depth += 1
        elif c in "]}":
            if depth == 0:
                return i
            depth -= 1
        elif c == "," and depth == 0:
            return i
        i += 1
    return n


def _iter_elements(name: str, text: str, i: int) -> Iterator[RawRecord | RawError]:
    """The elements of a JSON array that does not parse as a whole, from just after its '[': each good
    element is kept, each bad one is a located RawError, a truncated file says where it ends."""
    index = 0
    while True:
        i = _skip_ws(text, i)
        if i >= len(text):
            yield RawError(
                name,
                index,
                "truncated_json",
                f"the file ends inside the JSON array, at line {text.count(chr(10), 0, i) + 1} (truncated? "
                f"the {index} complete record(s) before it are kept)",
                "element",
            )
            return
        if text[i] == "]" and index == 0:
            return
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except (ValueError, RecursionError) as exc:
            end = _value_end(text, i)
            line = text.count("\n", 0, i) + 1
            if end >= len(text) and isinstance(exc, json.JSONDecodeError):
                yield RawError(
                    name,
                    index,
                    "truncated_json",
                    f"the file ends inside this record, which starts at line {line} (truncated? the {index} "
                    "complete record(s) before it are kept)",
                    "element",
                )
                return
            reason, message = _bad_json(exc)
            if isinstance(exc, json.JSONDecodeError):
                message = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            yield RawError(name, index, reason, f"{message} (record starts at line {line})", "element")
        else:
            yield RawRecord(name, index, obj, "element")
        index += 1
        i = _skip_ws(text, end)
        if i < len(text) and text[i] == ",":
            i += 1
        elif i < len(text) and text[i] == "]":
            return
        elif i < len(text):  # text between elements: reported, then skipped to the next separator
            line = text.count("\n", 0, i) + 1
            yield RawError(
                name, index, "invalid_json", f"expected ',' or ']' after record {index - 1}, at line {line}", "element"
            )
            index += 1
            i = _value_end(text, i)
            if i < len(text) and text[i] == "]":
                return
            i += 1


def iter_raw(
    path: str | Path, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, parse: bool = True
) -> Iterator[RawRecord | RawError]:
    """Located raw records of one file (JSONL, JSON array or single JSON document). With parse=False,
    JSONL lines come as raw bytes in `obj` (arrays and documents are always parsed)."""
    p = Path(path)
    check_text_file(p)
    layout = sniff_layout(p)
    if layout == "empty":
        yield RawError(str(p), 0, "empty_file", "file is empty", "document")
    elif layout == "jsonl":
        yield from _iter_jsonl(p, max_record_bytes, parse)
    else:
        yield from _iter_json(p, max_record_bytes)
