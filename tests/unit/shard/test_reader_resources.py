"""ShardReader's bounded caches (member indexes by bytes, open files by count), its start-up metadata
cost and member_size."""

from __future__ import annotations

import os
import pathlib
import pickle
import resource
from collections import Counter

import numpy as np
import pytest

from tests.conftest import make_record, write_jsonl
from xlam_hpc.errors import ShardError
from xlam_hpc.shard import ShardConfig, ShardReader, load_manifest, write_shards
from xlam_hpc.shard import reader as reader_module

SHARDS = 50


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """50 shards of alpha (2 samples each) and 2 of beta."""
    tmp = tmp_path_factory.mktemp("many")
    rows = [make_record(i, "alpha") for i in range(2 * SHARDS)] + [make_record(i, "beta") for i in range(4)]
    corpus = write_jsonl(tmp / "in.jsonl", rows)
    out = tmp / "s"
    write_shards(ShardConfig(inputs=[str(corpus)], output_dir=str(out), samples_per_shard=2, progress=False))
    return out


def _touch_shards(r: ShardReader, shards) -> None:
    for k in shards:
        r.read_member("alpha", 2 * k)


def test_index_cache_is_bounded_by_bytes(many):
    one = np.load(many / "alpha-000000.idx.npy").nbytes  # 2 samples x (offset, size, checksum) x int64 = 48
    with ShardReader(many, index_cache_bytes=4 * one) as r:
        _touch_shards(r, range(SHARDS))
        assert len(r._index) == 4 and r._index_bytes == sum(i.nbytes for i in r._index.values()) == 4 * one
        assert list(r._index) == [f"alpha-0000{k}.tar" for k in range(46, 50)]
        # least recently used goes first: touching 46 again makes 47 the next to go
        _touch_shards(r, [46, 0])
        assert list(r._index) == ["alpha-000048.tar", "alpha-000049.tar", "alpha-000046.tar", "alpha-000000.tar"]
        assert r.record("alpha", 2 * 47 + 1).unique_trajectory_id == "alpha-95"  # evicted indexes reload
    with ShardReader(many) as r:  # default 256 MiB: everything stays
        _touch_shards(r, range(SHARDS))
        assert r.index_cache_bytes == 256 << 20 and len(r._index) == SHARDS


def test_an_index_larger_than_the_bound_is_used_not_kept(many):
    with ShardReader(many, index_cache_bytes=10) as r:
        _touch_shards(r, [3])
        assert list(r._index) == ["alpha-000003.tar"]
        _touch_shards(r, [4, 4])
        assert list(r._index) == ["alpha-000004.tar"] and r._index_bytes < 100


def test_open_files_cap(many, monkeypatch):
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    expected = 1024 if soft == resource.RLIM_INFINITY else min(1024, soft // 2)
    with ShardReader(many) as r:
        assert r.max_open_files == expected
        if soft >= 2 * 65:
            assert r.max_open_files > 64
    for limit, cap in [((100, 4096), 50), ((8192, 8192), 1024), ((resource.RLIM_INFINITY,) * 2, 1024)]:
        monkeypatch.setattr(reader_module.resource, "getrlimit", lambda _, limit=limit: limit)
        assert reader_module.default_max_open_files() == cap
    monkeypatch.undo()

    opened, closed = [], []
    real_open, real_close = os.open, os.close
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(real_open(*a, **k)) or opened[-1])
    monkeypatch.setattr(os, "close", lambda fd: closed.append(fd) or real_close(fd))
    with ShardReader(many, max_open_files=3) as r:
        _touch_shards(r, range(10))
        assert len(r._fds) == 3 and len(opened) - len(closed) == 3
        assert list(r._fds) == ["alpha-000007.tar", "alpha-000008.tar", "alpha-000009.tar"]
        _touch_shards(r, [8, 9, 7])
        assert len(opened) == 10  # kept descriptors are reused
    assert len(opened) == len(closed)
    with pytest.raises(ValueError, match="max_open_files"):
        ShardReader(many, max_open_files=0)


def test_pickled_reader_carries_no_descriptors_or_indexes(many):
    with ShardReader(many, max_open_files=7, index_cache_bytes=1000) as r:
        _touch_shards(r, range(5))
        copy = pickle.loads(pickle.dumps(r))
        assert not copy._fds and not copy._index and copy._index_bytes == 0
        assert (copy.max_open_files, copy.index_cache_bytes) == (7, 1000)
        assert copy.record("alpha", 3).unique_trajectory_id == "alpha-3"
        copy.close()


def _count_metadata(monkeypatch) -> Counter:
    calls: Counter = Counter()

    def counted(owner, name):
        real = getattr(owner, name)

        def wrapper(*a, **k):
            calls[name] += 1
            return real(*a, **k)

        monkeypatch.setattr(owner, name, wrapper)

    for owner, name in [
        (os, "stat"),
        (os, "lstat"),
        (os, "fstat"),
        (os, "scandir"),
        (os, "listdir"),
        (os, "open"),
        (os.path, "exists"),
        (os.path, "isfile"),
        (pathlib.Path, "stat"),
        (pathlib.Path, "lstat"),
        (pathlib.Path, "is_file"),
        (pathlib.Path, "exists"),
    ]:
        counted(owner, name)
    return calls


def test_start_up_reads_at_most_one_metadata_entry_per_shard(many, monkeypatch):
    manifest = load_manifest(many)
    shards = len(manifest.shards)
    assert shards == SHARDS + 2
    calls = _count_metadata(monkeypatch)
    ShardReader(manifest).close()
    assert calls == Counter(scandir=1)  # one listing of the folder, no per-file call
    calls.clear()
    ShardReader(manifest, skip_bad_shards=True).close()
    assert calls == Counter(scandir=1, stat=shards)  # plus exactly one stat per tar
    assert sum(calls.values()) <= shards + 1


def test_missing_and_truncated_shards_are_named(tmp_path, many):
    import shutil

    out = tmp_path / "s"
    shutil.copytree(many, out)
    (out / "alpha-000007.idx.npy").unlink()
    with pytest.raises(ShardError, match=r"alpha-000007.tar: missing \(alpha-000007.idx.npy is listed in the manifest"):
        ShardReader(out)
    (out / "alpha-000003.tar").unlink()
    with pytest.raises(ShardError, match=r"alpha-000003.tar: missing \(alpha-000003.tar is listed in the manifest"):
        ShardReader(out)
    tar = out / "beta-000001.tar"
    size = tar.stat().st_size
    tar.write_bytes(tar.read_bytes()[:-512])
    with ShardReader(out, skip_bad_shards=True) as r:
        assert r.sources == {"alpha": 2 * SHARDS - 4, "beta": 2}
        assert sorted(r.skipped) == [
            "alpha-000003.tar: missing (alpha-000003.tar is listed in the manifest)",
            "alpha-000007.tar: missing (alpha-000007.idx.npy is listed in the manifest)",
            f"beta-000001.tar: size {size - 512} bytes, manifest says {size} (truncated or replaced)",
        ]
    shutil.copy(many / "alpha-000003.tar", out)
    shutil.copy(many / "alpha-000007.idx.npy", out)
    with ShardReader(out) as r:
        assert r.record("beta", 1).unique_trajectory_id == "beta-1"
        with pytest.raises(ShardError, match=rf"{tar}: size {size - 512} bytes, manifest says {size} \(truncated"):
            r.record("beta", 2)
        assert not any(name.startswith("beta-000001") for name in r._fds)


def test_member_size(tmp_path, many):
    samples = [("alpha", 0), ("alpha", 77), ("beta", 3)]
    with ShardReader(many) as r:
        sizes = [r.member_size(source, i, "json") for source, i in samples]
        assert not r._fds  # no shard data was read for the sizes
        assert sizes == [len(r.read_member(source, i, "json")) for source, i in samples]
        with pytest.raises(ShardError, match=r"no '.tok.ids' member"):
            r.member_size("alpha", 0, "tok.ids")
        with pytest.raises(ShardError, match="has 4 samples"):
            r.member_size("beta", 4, "json")
    corpus = write_jsonl(tmp_path / "in.jsonl", [make_record(i, "gamma") for i in range(3)])

    def extra(rec):
        return {"tok.ids": np.arange(len(rec.unique_trajectory_id) * 10, dtype=np.int32).tobytes()}

    out = tmp_path / "tok"
    write_shards(
        ShardConfig(inputs=[str(corpus)], output_dir=str(out), progress=False), extra=extra, extra_members=["tok.ids"]
    )
    with ShardReader(out) as r:
        assert [r.member_size("gamma", i, "tok.ids") // 4 for i in range(3)] == [70, 70, 70]
        assert not r._fds
