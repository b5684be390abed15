"""Raw input reading: every kind of bad input becomes a located RawError, the rest is kept."""

from __future__ import annotations

import json
import re

import pytest

from xlam_hpc.convert.reader import RawError, RawRecord, explain_json_error, iter_raw, sniff_layout
from xlam_hpc.errors import DataError


def test_jsonl_with_bad_lines_keeps_good_ones(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2\n\xff\xfe{"a": 3}\n\n{"a": 4}\n')
    items = list(iter_raw(p))
    good = [i for i in items if isinstance(i, RawRecord)]
    bad = [i for i in items if isinstance(i, RawError)]
    assert [g.obj["a"] for g in good] == [1, 4]
    assert [g.index for g in good] == [1, 5]
    assert [(b.index, b.reason) for b in bad] == [(2, "invalid_json"), (3, "invalid_utf8")]
    assert bad[0].where == f"{p}:line 2"


def test_json_array_and_pretty_document(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"x": 1}, {"x": 2}], indent=2))
    assert sniff_layout(arr) == "json"
    items = list(iter_raw(arr))
    assert [(i.kind, i.index, i.obj["x"]) for i in items] == [("element", 0, 1), ("element", 1, 2)]
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"x": {"y": 1}}, indent=2))
    assert [(i.kind, i.obj) for i in iter_raw(doc)] == [("document", {"x": {"y": 1}})]


def test_empty_file_and_truncated_document(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("  \n")
    assert [(e.reason, e.where) for e in iter_raw(empty)] == [("empty_file", f"{empty}:document")]
    trunc = tmp_path / "trunc.json"
    trunc.write_text('[{"x": 1}, {"x":')
    good, err = list(iter_raw(trunc))  # the complete record before the cut is kept
    assert isinstance(good, RawRecord) and good.obj == {"x": 1}
    assert (err.reason, err.where) == ("truncated_json", f"{trunc}:record 1")
    assert "truncated?" in err.message and "1 complete record(s) before it are kept" in err.message
    doc = tmp_path / "trunc_doc.json"
    doc.write_text('{\n  "x": [1,\n')
    (err,) = list(iter_raw(doc))
    assert err.reason == "invalid_json" and "ends too early: truncated?" in err.message


def test_oversized_line_is_rejected_without_loading_it(tmp_path):
    p = tmp_path / "big.jsonl"
    big = json.dumps({"blob": "x" * 5000})
    p.write_text('{"a": 1}\n' + big + '\n{"a": 2}\n')
    items = list(iter_raw(p, max_record_bytes=1000))
    assert [getattr(i, "reason", None) for i in items] == [None, "record_too_large", None]
    assert items[2].obj == {"a": 2} and items[2].index == 3


def test_non_json_numbers_are_rejected_with_their_line(tmp_path):
    p = tmp_path / "nan.jsonl"
    p.write_text('{"a": 1}\n{"a": NaN}\n{"a": Infinity}\n{"a": -Infinity}\n{"a": 2}\n')
    items = list(iter_raw(p))
    assert [i.obj["a"] for i in items if isinstance(i, RawRecord)] == [1, 2]
    bad = [(i.where, i.reason) for i in items if isinstance(i, RawError)]
    assert bad == [(f"{p}:line {n}", "non_json_number") for n in (2, 3, 4)]
    assert "non-JSON number -Infinity" in items[3].message


def test_json_array_keeps_the_good_elements_around_bad_ones(tmp_path):
    p = tmp_path / "arr.json"
    deep = '{"x":' * 5000 + "1" + "}" * 5000
    p.write_text('[{"a": 0},\n {"a": NaN},\n ' + deep + ',\n {"a" 3},\n {"a": 4} junk,\n {"a": 5}]')
    items = list(iter_raw(p))
    assert [(i.index, i.obj["a"]) for i in items if isinstance(i, RawRecord)] == [(0, 0), (4, 4), (6, 5)]
    bad = {i.index: (i.reason, i.message) for i in items if isinstance(i, RawError)}
    assert bad[1][0] == "non_json_number" and "line 2" in bad[1][1]
    assert bad[2][0] == "too_deeply_nested" and "line 3" in bad[2][1]
    assert bad[3][0] == "invalid_json" and "line 4" in bad[3][1]
    assert bad[5] == ("invalid_json", "expected ',' or ']' after record 4, at line 5")


def test_deeply_nested_line_is_a_reject_not_a_recursion_error(tmp_path):
    p = tmp_path / "deep.jsonl"
    p.write_text('{"a": 1}\n' + "[" * 100_000 + "]" * 100_000 + '\n{"a": 2}\n')
    items = list(iter_raw(p))
    assert [getattr(i, "reason", None) for i in items] == [None, "too_deeply_nested", None]
    assert items[1].where == f"{p}:line 2"


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert [i.obj for i in iter_raw(p)] == [{"a": 1}, {"a": 2}]
    arr = tmp_path / "bom.json"
    arr.write_bytes(b'\xef\xbb\xbf[{"a": 1}]')
    assert [i.obj for i in iter_raw(arr)] == [{"a": 1}]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"a": 1}\n'.encode("utf-16"), "file is UTF-16 text (byte-order mark), not UTF-8"),
        ('{"a": 1}\n'.encode("utf-16-le"), "file is UTF-16LE text (NUL bytes between ASCII characters"),
        ('{"a": 1}\n'.encode("utf-32"), "file is UTF-32 text (byte-order mark)"),
        (b"\x1f\x8b\x08\x00\x00", "file is gzip-compressed"),
        (b"shard-000000.tar\x00\x00\x00" + b"x" * 600, "binary file (NUL byte at byte 16)"),
    ],
    ids=["utf16-bom", "utf16le-no-bom", "utf32", "gzip", "binary"],
)
def test_files_that_are_not_utf8_text_are_named(tmp_path, data, expected):
    p = tmp_path / "in.jsonl"
    p.write_bytes(data)
    with pytest.raises(DataError, match=re.escape(f"{p}: {expected}")):
        list(iter_raw(p))


def test_a_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(DataError, match="is a directory, not a data file"):
        list(iter_raw(tmp_path))


def test_explain_json_error_names_what_msgspec_does_not():
    assert explain_json_error(b'{"a": NaN}')[0] == "non_json_number"
    assert explain_json_error(b"[" * 100_000)[0] == "too_deeply_nested"
    assert explain_json_error(b'{"a": 1')[1].startswith("invalid JSON at column 8")
    assert explain_json_error(b'{"a": 1}') == ("invalid_json", "")
