"""Per-member checksum (xxh3) in the member index: corruption in place that still parses is named, not streamed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.conftest import make_record, write_jsonl
from xlam_hpc.errors import ShardError
from xlam_hpc.files import sha256_file
from xlam_hpc.schema import decode_record
from xlam_hpc.shard import ShardConfig, ShardReader, load_manifest, write_shards
from xlam_hpc.shard import writer as writer_module
from xlam_hpc.shard.writer import build_member_index


def _extra(rec):
    ids = np.arange(len(rec.unique_trajectory_id), dtype=np.int32)
    return {"tok.ids": ids.tobytes(), "tok.len": np.int32(len(ids)).tobytes()}


def _write(tmp_path, name="s", **kw):
    corpus = tmp_path / "in.jsonl"
    if not corpus.exists():
        write_jsonl(corpus, [make_record(i, "alpha") for i in range(20)] + [make_record(i, "beta") for i in range(3)])
    out = tmp_path / name
    write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(out), samples_per_shard=8, progress=False), **kw)
    return out


def _patch(path, offset: int, old: bytes, new: bytes) -> None:
    """Replace `old` by `new` (same length) at its first occurrence after `offset`, in place."""
    data = bytearray(path.read_bytes())
    at = data.index(old, offset)
    data[at : at + len(old)] = new
    path.write_bytes(bytes(data))


def test_corruption_in_place_that_still_parses_is_named(tmp_path):
    out = _write(tmp_path)
    assert load_manifest(out).member_checksum == "xxh3"
    shard = out / "alpha-000001.tar"
    offset, size, _ = np.load(out / "alpha-000001.idx.npy")[1, :3].tolist()  # alpha:9, row 1 of the 2nd shard
    _patch(shard, offset, b'"alpha-9-0"', b'"alphb-9-0"')  # a letter inside a string value
    with ShardReader(out) as r:
        corrupted = shard.read_bytes()[offset : offset + size]
        assert decode_record(corrupted).conversation[1].tool_calls[0].arguments == {"q": "alphb-9-0"}  # still valid
        expected = f"{shard}: sample 1 (alpha:9) member .json fails its xxh3 check (corrupted in place?)"
        with pytest.raises(ShardError, match=re.escape(expected)):
            r.record("alpha", 9)
        with pytest.raises(ShardError, match=re.escape(expected)):
            r.read_member("alpha", 9)
        assert [r.record("alpha", i).unique_trajectory_id for i in (0, 8, 10, 19)] == [
            f"alpha-{i}" for i in (0, 8, 10, 19)
        ]


def test_every_returned_member_is_checked(tmp_path):
    out = _write(tmp_path, extra=_extra, extra_members=["tok.ids", "tok.len"])
    assert load_manifest(out).members == ["json", "tok.ids", "tok.len"]
    idx = np.load(out / "beta-000000.idx.npy")
    assert idx.shape == (3, 9)
    offset = int(idx[2, 3])  # beta:2 tok.ids
    data = bytearray((out / "beta-000000.tar").read_bytes())
    data[offset] ^= 0x01
    (out / "beta-000000.tar").write_bytes(bytes(data))
    with ShardReader(out) as r:
        assert decode_record(r.read_members("beta", 2, ("json", "tok.len"))[0]).unique_trajectory_id == "beta-2"
        with pytest.raises(ShardError, match=r"sample 2 \(beta:2\) member \.tok\.ids fails its xxh3"):
            r.read_members("beta", 2, ("json", "tok.ids", "tok.len"))
        ids = np.frombuffer(r.read_member("beta", 1, "tok.ids"), dtype=np.int32)
        assert len(ids) == len("beta-1")


def test_fallback_scan_gives_the_predicted_index(tmp_path, monkeypatch):
    predicted = _write(tmp_path, "predicted", extra=_extra, extra_members=["tok.ids", "tok.len"])
    members = load_manifest(predicted).members
    for s in load_manifest(predicted).shards:
        scanned = build_member_index(predicted / s.path, members, s.num_samples)
        np.testing.assert_array_equal(scanned, np.load(predicted / s.index_path))
    # the writer itself on the fallback path: as if every offset prediction had missed
    monkeypatch.setattr(writer_module, "all", lambda rows: False, raising=False)
    scanned_dir = _write(tmp_path, "scanned", extra=_extra, extra_members=["tok.ids", "tok.len"])
    a, b = load_manifest(predicted), load_manifest(scanned_dir)
    assert [s.index_sha256 for s in a.shards] == [s.index_sha256 for s in b.shards]
    assert a.fingerprint == b.fingerprint


def _as_old_directory(out) -> None:
    """Rewrite a shard directory as written before the checksum: (offset, size) index, no manifest field."""
    m = load_manifest(out)
    for s in m.shards:
        idx = np.load(out / s.index_path)
        keep = [c for c in range(idx.shape[1]) if c % 3 != 2]
        np.save(out / s.index_path, np.ascontiguousarray(idx[:, keep]), allow_pickle=False)
        s.index_sha256 = sha256_file(out / s.index_path)
    m.member_checksum = ""
    m.write(out)
    raw = json.loads((out / "manifest.json").read_text())
    del raw["member_checksum"]
    (out / "manifest.json").write_text(json.dumps(raw))


def test_old_directories_still_read_unchecked(tmp_path):
    out = _write(tmp_path)
    fingerprint = load_manifest(out).fingerprint
    _as_old_directory(out)
    m = load_manifest(out)
    assert m.member_checksum == "" and m.index_stride == 2 and m.fingerprint == fingerprint  # resume states stay valid
    offset = int(np.load(out / "alpha-000001.idx.npy")[1, 0])
    _patch(out / "alpha-000001.tar", offset, b'"alpha-9-0"', b'"alphb-9-0"')
    with ShardReader(out) as r:
        assert r.record("alpha", 9).conversation[1].tool_calls[0].arguments == {"q": "alphb-9-0"}  # nothing to check
        assert r.record("beta", 2).unique_trajectory_id == "beta-2"


def test_index_shape_must_match_the_manifest(tmp_path):
    out = _write(tmp_path)
    m = load_manifest(out)
    m.member_checksum = ""  # claims old-style indexes, files hold 3 columns
    m.write(out)
    with ShardReader(out) as r, pytest.raises(ShardError, match=r"alpha-000000.idx.npy: index has shape \(8, 3\)"):
        r.record("alpha", 0)
    m.member_checksum = "md5"
    m.write(out)
    with pytest.raises(ShardError, match="member checksum 'md5'"):
        load_manifest(out)


def test_directories_written_with_crc32_are_still_checked(tmp_path, monkeypatch):
    import zlib

    monkeypatch.setattr(writer_module, "_CHECKSUM", zlib.crc32)  # what the first version wrote
    monkeypatch.setattr(writer_module, "MEMBER_CHECKSUM", "crc32")
    out = _write(tmp_path)
    assert load_manifest(out).member_checksum == "crc32"
    shard = out / "alpha-000001.tar"
    offset = int(np.load(out / "alpha-000001.idx.npy")[1, 0])
    _patch(shard, offset, b'"alpha-9-0"', b'"alphb-9-0"')
    with ShardReader(out) as r:
        with pytest.raises(ShardError, match=r"sample 1 \(alpha:9\) member \.json fails its crc32 check"):
            r.record("alpha", 9)
        assert r.record("alpha", 8).unique_trajectory_id == "alpha-8"
