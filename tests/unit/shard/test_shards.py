"""Shard writing, random access by (source, index), integrity checks and atomicity."""

from __future__ import annotations

import json
import pickle
import tarfile

import numpy as np
import pytest

from tests.conftest import make_record, write_jsonl
from xlam_hpc.cli import main
from xlam_hpc.errors import ConfigError, ShardError
from xlam_hpc.files import sha256_file
from xlam_hpc.shard import ShardConfig, ShardReader, inspect_dataset, load_manifest, write_shards


@pytest.fixture
def corpus(tmp_path):
    rows = [make_record(i, "alpha") for i in range(10)] + [make_record(i, "beta", turns=2) for i in range(5)]
    rows.insert(3, "{broken")
    rows.append(make_record(0, "alpha"))  # duplicate id
    return write_jsonl(tmp_path / "in.jsonl", rows)


def test_write_and_read_back(tmp_path, corpus):
    out = tmp_path / "shards"
    summary = write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(out), samples_per_shard=4, progress=False))
    assert summary.written == 15 and summary.rejected == {"duplicate_id": 1, "invalid_json": 1}
    m = load_manifest(out)
    assert m.sources == {
        "alpha": {"num_samples": 10, "num_shards": 3, "kind": "trajectory"},
        "beta": {"num_samples": 5, "num_shards": 2, "kind": "trajectory"},
    }
    assert [s.path for s in m.shards] == [f"alpha-00000{i}.tar" for i in range(3)] + [
        "beta-000000.tar",
        "beta-000001.tar",
    ]
    assert [s.num_samples for s in m.shards] == [4, 4, 2, 4, 1]
    assert all(s.sha256 == sha256_file(out / s.path) for s in m.shards)
    with ShardReader(out) as r:
        assert r.sources == {"alpha": 10, "beta": 5}
        rec = r.record("alpha", 9)
        assert rec.unique_trajectory_id == "alpha-9" and rec.conversation[1].tool_calls[0].arguments == {
            "q": "alpha-9-0"
        }
        assert r.record("beta", 4).unique_trajectory_id == "beta-4"
        with pytest.raises(ShardError, match="has 5 samples"):
            r.record("beta", 5)
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(x["position"], x["reason"]) for x in rejects] == [
        ("line 4", "invalid_json"),
        ("line 17", "duplicate_id"),
    ]
    # a standard tar reader sees WebDataset layout: <key>.json members
    with tarfile.open(out / "alpha-000000.tar") as tar:
        assert tar.getnames() == [f"{i:09d}.json" for i in range(4)]


def test_shards_are_deterministic(tmp_path, corpus):
    a = write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(tmp_path / "a"), progress=False))
    b = write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(tmp_path / "b"), progress=False))
    assert a.written == b.written
    assert load_manifest(tmp_path / "a").fingerprint == load_manifest(tmp_path / "b").fingerprint


def test_existing_dataset_needs_overwrite(tmp_path, corpus):
    cfg = ShardConfig(inputs=[str(corpus)], output_dir=str(tmp_path / "s"), samples_per_shard=100, progress=False)
    write_shards(cfg)
    with pytest.raises(ConfigError, match="--overwrite"):
        write_shards(cfg)
    cfg.overwrite = True
    cfg.samples_per_shard = 3
    write_shards(cfg)
    names = sorted(p.name for p in (tmp_path / "s").glob("*.tar"))
    assert len(names) == 4 + 2 and "alpha-000003.tar" in names
    assert not list((tmp_path / "s").glob(".tmp-*"))


def test_killed_write_leaves_no_manifest(tmp_path, corpus, monkeypatch):
    import xlam_hpc.shard.writer as writer

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer.np, "save", boom)  # dies while closing the first shard
    with pytest.raises(KeyboardInterrupt):
        write_shards(
            ShardConfig(inputs=[str(corpus)], output_dir=str(tmp_path / "s"), samples_per_shard=2, progress=False)
        )
    assert not (tmp_path / "s" / "manifest.json").exists()
    assert not list((tmp_path / "s").rglob("*.tar"))
    with pytest.raises(ShardError, match=r"no manifest\.json"):
        load_manifest(tmp_path / "s")


def test_corruption_is_detected(tmp_path, corpus, capsys):
    out = tmp_path / "s"
    write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(out), samples_per_shard=4, progress=False))
    shard = out / "alpha-000001.tar"
    data = bytearray(shard.read_bytes())
    offset = int(np.load(out / "alpha-000001.idx.npy")[0, 0])
    data[offset + 1] ^= 0xFF  # flip a byte inside the first sample's JSON
    shard.write_bytes(bytes(data))
    report = inspect_dataset(out, samples=0)
    assert report["integrity"] == "FAILED" and report["problems"] == [f"{shard}: sha256 mismatch (corrupt or modified)"]
    assert main(["inspect", str(out), "--samples", "0"]) == 1
    printed = capsys.readouterr().out
    assert "sha256 mismatch" in printed and "integrity: FAILED (member checksum: xxh3)" in printed
    with (
        ShardReader(out) as r,
        pytest.raises(ShardError, match=r"alpha-000001.tar: sample 0 \(alpha:4\) member .json fails its xxh3"),
    ):
        r.record("alpha", 4)
    with ShardReader(out) as r, pytest.raises(ShardError, match=r"alpha-000001.tar: sample 0 \(alpha:4\) is corrupt"):
        r._checksum = None  # without the checksum, JSON that no longer parses is still named
        r.record("alpha", 4)
    # truncation: size differs from the manifest → named when the shard is first opened, or skipped with a count
    (out / "beta-000000.tar").write_bytes((out / "beta-000000.tar").read_bytes()[:1000])
    with ShardReader(out) as r, pytest.raises(ShardError, match=r"beta-000000.tar: size 1000 bytes, manifest says"):
        r.record("beta", 0)
    with ShardReader(out, skip_bad_shards=True) as r:
        assert r.sources == {"alpha": 10, "beta": 1} and len(r.skipped) == 1


def test_manifest_tampering_detected(tmp_path, corpus):
    out = tmp_path / "s"
    write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(out), progress=False))
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][0]["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match="fingerprint does not match"):
        load_manifest(out)


def test_pickle_members_are_never_decoded(tmp_path, corpus):
    out = tmp_path / "s"
    write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(out), progress=False))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    # A hostile shard: our reader is asked for a '.pyd' member and must refuse, not unpickle.
    with ShardReader(out) as r, pytest.raises(ShardError, match=r"no '.pyd' member"):
        r.read_member("alpha", 0, "pyd")
    assert pickle.dumps(Evil())  # the payload is real
    assert not marker.exists()
    idx = np.load(out / "alpha-000000.idx.npy", allow_pickle=False)
    assert idx.dtype == np.int64 and idx.shape == (10, 3)


def test_output_dir_not_writable(tmp_path, corpus):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write to"):
        write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(blocker / "sub"), progress=False))


def test_nothing_valid_is_an_error(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", ["{", '{"a": 1}'])
    assert main(["shard", str(p), "-o", str(tmp_path / "s"), "--no-progress"]) == 2
