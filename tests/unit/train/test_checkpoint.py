"""Checkpoint protocol: atomic commit, manifest verification, fallback, pruning, failed saves."""

from __future__ import annotations

import json
import logging

import pytest

from xlam_hpc.errors import ResumeError
from xlam_hpc.train.checkpoint import CheckpointError, CheckpointManager, Collectives, verify_checkpoint


def _writer(payload: bytes):
    def write(tmp):
        (tmp / "ds").mkdir()
        (tmp / "ds" / "model.pt").write_bytes(payload)
        (tmp / "loader-rank0.json").write_text('{"samples_consumed": 1}')

    return write


def _manager(tmp_path, keep_last=2, fp="fp1"):
    return CheckpointManager(tmp_path / "run", Collectives(), keep_last=keep_last, fingerprint=fp)


def test_save_commits_atomically_with_manifest_and_latest(tmp_path):
    m = _manager(tmp_path)
    path = m.save(10, _writer(b"weights"), extra={"task": "sft"})
    assert path.name == "checkpoint-10" and not (tmp_path / "run" / "checkpoint-10.tmp").exists()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 10 and manifest["world_size"] == 1 and manifest["fingerprint"] == "fp1"
    assert set(manifest["files"]) == {"ds/model.pt", "loader-rank0.json"} and manifest["task"] == "sft"
    assert manifest["files"]["ds/model.pt"]["size"] == 7
    assert (tmp_path / "run" / "latest").read_text().strip() == "checkpoint-10"
    assert verify_checkpoint(path) is None
    found, man = m.find_resumable()
    assert found == path and man["step"] == 10


def test_keep_last_prunes_old_but_never_latest(tmp_path):
    m = _manager(tmp_path, keep_last=2)
    for step in (1, 2, 3, 4):
        m.save(step, _writer(bytes([step])))
    assert [p.name for _, p in m.checkpoints()] == ["checkpoint-4", "checkpoint-3"]


def test_corrupt_latest_falls_back_to_older_with_warning(tmp_path, caplog):
    m = _manager(tmp_path, keep_last=3)
    m.save(1, _writer(b"one"))
    m.save(2, _writer(b"two"))
    (tmp_path / "run" / "checkpoint-2" / "ds" / "model.pt").write_bytes(b"tw0")  # same size, other bytes
    with caplog.at_level(logging.WARNING, logger="xlam_hpc.checkpoint"):
        found, manifest = m.find_resumable()
    assert found.name == "checkpoint-1" and manifest["step"] == 1
    assert "sha256 mismatch" in caplog.text and "falling back to checkpoint-1" in caplog.text


def test_truncated_file_and_missing_manifest_are_invalid(tmp_path):
    m = _manager(tmp_path)
    p = m.save(5, _writer(b"abcdef"))
    (p / "ds" / "model.pt").write_bytes(b"abc")
    assert "missing or wrong size" in verify_checkpoint(p)
    (p / "manifest.json").unlink()
    assert "no readable manifest" in verify_checkpoint(p)
    assert m.find_resumable() is None


def test_stale_tmp_is_cleaned(tmp_path):
    m = _manager(tmp_path)
    m.save(1, _writer(b"x"))
    stale = tmp_path / "run" / "checkpoint-2.tmp"
    (stale / "ds").mkdir(parents=True)
    assert m.clean_stale() == ["checkpoint-2.tmp"] and not stale.exists()
    assert m.find_resumable()[0].name == "checkpoint-1"


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    m = _manager(tmp_path)
    m.save(1, _writer(b"good"))

    def disk_full(tmp):
        (tmp / "part").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    with pytest.raises(
        CheckpointError,
        match=r"saving checkpoint-2 failed \(rank 0: OSError: \[Errno 28\] No space left on device "
        r"\(.*: [\d.]+ GiB free, (no file-size limit|file-size limit \d+ bytes)\)\); "
        r"the last valid checkpoint is still checkpoint-1",
    ):
        m.save(2, disk_full)
    assert not (tmp_path / "run" / "checkpoint-2.tmp").exists() and not (tmp_path / "run" / "checkpoint-2").exists()
    assert (tmp_path / "run" / "latest").read_text().strip() == "checkpoint-1"
    assert m.find_resumable()[0].name == "checkpoint-1"


def test_other_configuration_is_refused_unless_forced(tmp_path):
    _manager(tmp_path, fp="old").save(3, _writer(b"x"))
    m = _manager(tmp_path, fp="new")
    _, manifest = m.find_resumable()
    with pytest.raises(ResumeError, match="another configuration"):
        m.check_fingerprint(manifest, force=False)
    m.check_fingerprint(manifest, force=True)


def test_two_fake_ranks_share_the_hashing(tmp_path):
    # rank 1's view of the protocol: it hashes every other file and sends its digests to rank 0
    m0 = _manager(tmp_path)
    m0.save(1, _writer(b"w"))
    gathered = []

    def gather(obj):
        gathered.append(obj)
        return [{}, obj]

    coll = Collectives(rank=1, world_size=2, all_gather_object=gather)
    assert verify_checkpoint(tmp_path / "run" / "checkpoint-1", coll) is None
    assert list(gathered[0]) == ["loader-rank0.json"]  # sorted files: rank 1 takes index 1
