"""Raw input reading: every kind of bad input becomes a located RawError, the rest is kept."""

from __future__ import annotations

import json

from xlam_hpc.convert.reader import RawError, RawRecord, iter_raw, sniff_layout


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
    (err,) = list(iter_raw(trunc))
    assert err.reason == "invalid_json"


def test_oversized_line_is_rejected_without_loading_it(tmp_path):
    p = tmp_path / "big.jsonl"
    big = json.dumps({"blob": "x" * 5000})
    p.write_text('{"a": 1}\n' + big + '\n{"a": 2}\n')
    items = list(iter_raw(p, max_record_bytes=1000))
    assert [getattr(i, "reason", None) for i in items] == [None, "record_too_large", None]
    assert items[2].obj == {"a": 2} and items[2].index == 3
