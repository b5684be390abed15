"""`shard --overwrite` deletes only the old dataset's own shard files, never what a crafted manifest names."""

from __future__ import annotations

import re

import pytest

from tests.conftest import make_record, write_jsonl
from xlam_hpc.errors import ShardError
from xlam_hpc.shard import ShardConfig, load_manifest, write_shards


@pytest.fixture
def dataset(tmp_path):
    corpus = write_jsonl(tmp_path / "in.jsonl", [make_record(i, "alpha") for i in range(6)])
    cfg = ShardConfig(inputs=[str(corpus)], output_dir=str(tmp_path / "out"), samples_per_shard=2, progress=False)
    write_shards(cfg)
    cfg.overwrite = True
    return cfg


def _craft(out, field: str, name: str) -> None:
    m = load_manifest(out)
    setattr(m.shards[1], field, name)
    m.write(out)  # recomputes the fingerprint, so only our entry check stands in the way


@pytest.mark.parametrize(
    ("field", "entry"),
    [
        ("path", "../victim"),
        ("index_path", "../victim"),
        ("path", "ABSOLUTE"),
        ("path", "notes.txt"),
        ("index_path", "alpha-000001.tar"),  # a shard name, but not an index name
        ("path", "beta-000001.tar"),  # another source's naming
        ("path", "sub/alpha-000001.tar"),
    ],
)
def test_crafted_manifest_entry_deletes_nothing(tmp_path, dataset, field, entry):
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (out / "notes.txt").write_text("keep me too")
    if entry == "ABSOLUTE":
        entry = str(victim)
    _craft(out, field, entry)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ShardError, match=rf"manifest\.json: entry '{re.escape(entry)}'.*deletes nothing"):
        write_shards(dataset)
    assert victim.read_text() == "keep me" and (out / "notes.txt").read_text() == "keep me too"
    assert sorted(p.name for p in out.iterdir()) == before  # old shards, manifest and no temp folder
    assert load_manifest(out).shards[1].path == (entry if field == "path" else "alpha-000001.tar")


def test_symlink_out_of_the_folder_is_refused(tmp_path, dataset):
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (out / "alpha-000001.tar").unlink()
    (out / "alpha-000001.tar").symlink_to(victim)
    with pytest.raises(ShardError, match=r"entry 'alpha-000001\.tar'"):
        write_shards(dataset)
    assert victim.read_text() == "keep me"


def test_overwrite_replaces_the_old_shards(tmp_path, dataset):
    out = tmp_path / "out"
    (out / "notes.txt").write_text("not ours")
    dataset.samples_per_shard = 4
    write_shards(dataset)
    assert sorted(p.name for p in out.iterdir()) == [
        "alpha-000000.idx.npy",
        "alpha-000000.tar",
        "alpha-000001.idx.npy",
        "alpha-000001.tar",
        "manifest.json",
        "notes.txt",
        "rejects.jsonl",
    ]
    assert [s.num_samples for s in load_manifest(out).shards] == [4, 2]


def test_commit_checks_again(tmp_path, dataset):
    """A manifest swapped in while the new shards were being written is refused at commit too."""
    from xlam_hpc.shard import writer

    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    tmp = out / ".tmp-test"
    tmp.mkdir()
    _craft(out, "path", "../victim")
    with pytest.raises(ShardError, match=r"entry '\.\./victim'"):
        writer._commit(out, tmp, load_manifest(out))
    assert victim.exists() and (out / "manifest.json").exists() and (out / "alpha-000000.tar").exists()
