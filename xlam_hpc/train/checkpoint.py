"""Atomic, verifiable checkpoints: checkpoint-N/ with a manifest, and our own `latest` pointer.

Save (collective): every rank writes into checkpoint-N.tmp/ (DeepSpeed's model/optimizer/scheduler
states, and per rank its loader state and RNG states) → barrier → the files are hashed in parallel
(rank r hashes and fsyncs every W-th file) → rank 0 writes manifest.json (files, sizes, sha256, world
size, step, config fingerprint), fsyncs, renames to checkpoint-N/, then replaces `latest` atomically.
DeepSpeed's own `latest` file is never written (save_latest=False): it is written before DeepSpeed's
final barrier, so it can name a checkpoint that is not complete.

Load: `latest` if its manifest validates, else the newest valid checkpoint (with a warning); stale
*.tmp folders are removed; the last `keep_last` checkpoints are kept, never the one `latest` names.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ResumeError, XlamError
from xlam_hpc.files import fsync_dir, sha256_file

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "Collectives",
    "check_fingerprint",
    "list_checkpoints",
    "verify_checkpoint",
]

log = logging.getLogger("xlam_hpc.checkpoint")
MANIFEST = "manifest.json"
LATEST = "latest"
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(XlamError):
    """A save failed (disk full, unwritable...): the previous checkpoint is still the valid one."""

    exit_code = 74  # EX_IOERR


@dataclass
class Collectives:
    """The three collectives the protocol needs (single process: no-ops)."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = lambda: None
    all_gather_object: Callable[[Any], list[Any]] = lambda obj: [obj]
    broadcast_object: Callable[[Any], Any] = lambda obj: obj


def _hash_and_sync(path: Path) -> tuple[int, str]:
    return path.stat().st_size, sha256_file(path, fsync=True)


def _io_context(path: Path) -> str:
    """What usually explains a failed write: free space and the process's file-size limit."""
    import resource

    try:
        free = f"{shutil.disk_usage(path).free / 2**30:.2f} GiB free"
    except OSError:
        free = "free space unknown"
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = "no file-size limit" if soft == resource.RLIM_INFINITY else f"file-size limit {soft} bytes"
    return f"{path.parent}: {free}, {limit}"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def verify_checkpoint(path: Path, coll: Collectives | None = None, *, hashes: bool = True) -> str | None:
    """None if `path` is a complete checkpoint, else why not. With `coll`, ranks share the hashing."""
    coll = coll or Collectives()
    problem = None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as exc:
        return f"{path}: no readable manifest ({exc})"
    names = sorted(files)
    for name in names:
        p = path / name
        if not p.is_file() or p.stat().st_size != files[name]["size"]:
            problem = f"{p}: missing or wrong size"
            break
    mine: dict[str, str] = {}
    if problem is None and hashes:
        for i, name in enumerate(names):
            if i % coll.world_size == coll.rank:
                mine[name] = _hash_and_sync(path / name)[1]
    found = coll.all_gather_object(problem or mine)
    for item in found:
        if isinstance(item, str):
            return item
        for name, digest in item.items():
            if digest != files[name]["sha256"]:
                return f"{path / name}: sha256 mismatch"
    return None


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every finished checkpoint-N folder in `root` (a run's output_dir), newest first."""
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def check_fingerprint(root: Path, manifest: dict[str, Any], fingerprint: str, *, force: bool) -> None:
    """ResumeError when a checkpoint was made by another configuration (unless forced)."""
    if manifest.get("fingerprint") != fingerprint and not force:
        raise ResumeError(
            f"{root} holds a checkpoint of another configuration (fingerprint {manifest.get('fingerprint')}, "
            f"this recipe {fingerprint}); use another output_dir, or resume: force to continue anyway"
        )


class CheckpointManager:
    """Save/find/load checkpoints of one run in `output_dir` (see module docstring)."""

    def __init__(self, output_dir: str | Path, coll: Collectives, *, keep_last: int, fingerprint: str) -> None:
        self.root = Path(output_dir)
        self.coll, self.keep_last, self.fingerprint = coll, keep_last, fingerprint

    # -- discovery --------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every finished checkpoint folder, newest first."""
        return list_checkpoints(self.root)

    def latest_name(self) -> str | None:
        try:
            return (self.root / LATEST).read_text().strip() or None
        except OSError:
            return None

    def clean_stale(self) -> list[str]:
        """Remove checkpoint-*.tmp left by an interrupted save (rank 0; call before a barrier)."""
        removed = []
        if self.coll.rank == 0 and self.root.is_dir():
            for p in self.root.glob("checkpoint-*.tmp"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
                log.warning("removed stale partial checkpoint %s", p)
        return removed

    def find_resumable(self) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint to resume from (collective: every rank gets the same answer)."""
        candidates = self.checkpoints()
        latest = self.latest_name()
        candidates.sort(key=lambda c: (c[1].name != latest, -c[0]))  # `latest` first, then newest
        for _, path in candidates:
            problem = verify_checkpoint(path, self.coll)
            if problem is None:
                manifest = json.loads((path / MANIFEST).read_text())
                if latest and path.name != latest:
                    log.warning("latest names %s, which is not valid; falling back to %s", latest, path.name)
                return path, manifest
            log.warning("skipping checkpoint %s: %s", path.name, problem)
        return None

    def check_fingerprint(self, manifest: dict[str, Any], *, force: bool) -> None:
        check_fingerprint(self.root, manifest, self.fingerprint, force=force)

    # -- save -------------------------------------------------------------------------------------
    def save(self, step: int, write_rank_files: Callable[[Path], None], extra: dict[str, Any] | None = None) -> Path:
        """Collective save of `step`. `write_rank_files(tmp_dir)` writes this rank's part (DeepSpeed states,
        loader/RNG state). Raises CheckpointError on every rank if any rank failed."""
        started = time.monotonic()
        tmp = self.root / f"checkpoint-{step}.tmp"
        final = self.root / f"checkpoint-{step}"
        error = None
        if self.coll.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                tmp.mkdir(parents=True)
            except OSError as exc:
                error = f"rank 0: cannot create {tmp}: {exc}"
        self.coll.barrier()
        if error is None and tmp.is_dir():
            try:
                write_rank_files(tmp)
            except (OSError, RuntimeError) as exc:
                # torch.save's zip writer reports a refused write as RuntimeError("unexpected pos ..."), not OSError
                error = f"rank {self.coll.rank}: {type(exc).__name__}: {str(exc).strip()} ({_io_context(tmp)})"
        errors = [e for e in self.coll.all_gather_object(error) if e]
        digests: dict[str, tuple[int, str]] = {}
        if not errors:
            try:
                for i, name in enumerate(_files(tmp)):
                    if i % self.coll.world_size == self.coll.rank:
                        digests[name] = _hash_and_sync(tmp / name)
            except OSError as exc:
                errors.append(f"rank {self.coll.rank}: {exc}")
            gathered = self.coll.all_gather_object(errors[0] if errors else digests)
            errors = [g for g in gathered if isinstance(g, str)]
            for g in gathered:
                if isinstance(g, dict):
                    digests.update(g)
        if errors:
            if self.coll.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(
                f"saving checkpoint-{step} failed ({'; '.join(errors)}); the last valid checkpoint is still "
                f"{self.latest_name() or 'none'}"
            )
        if self.coll.rank == 0:
            try:
                self._commit(step, tmp, final, digests, extra or {})
            except OSError as exc:
                error = f"rank 0: {exc}"
        error = self.coll.broadcast_object(error)
        if error:
            raise CheckpointError(f"committing checkpoint-{step} failed ({error}); last valid: {self.latest_name()}")
        log.info("saved %s in %.2f s", final.name, time.monotonic() - started)
        return final

    def _commit(
        self, step: int, tmp: Path, final: Path, digests: dict[str, tuple[int, str]], extra: dict[str, Any]
    ) -> None:
        manifest = {
            "step": step,
            "world_size": self.coll.world_size,
            "fingerprint": self.fingerprint,
            "created": time.time(),
            "files": {name: {"size": size, "sha256": sha} for name, (size, sha) in sorted(digests.items())},
            **extra,
        }
        with (tmp / MANIFEST).open("w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        if final.exists():  # the same step saved again after a resume: replace it
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(self.root)
        pointer = self.root / (LATEST + ".tmp")
        with pointer.open("w") as f:
            f.write(final.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer, self.root / LATEST)
        fsync_dir(self.root)
        self._prune(final.name)

    def _prune(self, keep: str) -> None:
        for i, (_, path) in enumerate(self.checkpoints()):
            if i >= self.keep_last and path.name != keep:
                shutil.rmtree(path, ignore_errors=True)
