"""Elastic resume: continue a checkpoint saved by N ranks with M ranks.

ZeRO partitions the optimizer states (and under ZeRO-3 the weights) by rank, so a checkpoint only loads
at the world size that wrote it. DeepSpeed's universal checkpoint is the world-size-free form: one
folder per parameter with its fp32 weights, exp_avg and exp_avg_sq. On the first resume with another
world size, rank 0 converts checkpoint-N/ds into checkpoint-N/universal once (deepspeed's
ds_to_universal, in a subprocess), atomically (written as universal.tmp, renamed when complete); later
resumes of the same checkpoint, at any world size, reuse it. The folder is pruned with its checkpoint.

Exact: weights, Adam moments and step, LR schedule, and the global sample stream (the loader state is
global). Not exact: each rank's dropout RNG, reseeded from (seed, rank, step) since the ranks' streams
cannot be re-split.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ResumeError
from xlam_hpc.files import fsync_dir
from xlam_hpc.train.checkpoint import Collectives

__all__ = ["UNIVERSAL", "ensure_universal", "load_universal", "resume_elastic"]

log = logging.getLogger("xlam_hpc.train")
UNIVERSAL = "universal"
"""Folder inside checkpoint-N holding its universal form (DeepSpeed tag "ds" inside it)."""
_DONE = "universal.json"
_FAILED = "universal.failed"
_POLL_S = 0.5


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _workers(ds_dir: Path) -> int:
    """Parallel extract processes: each holds one rank's optimizer file, so bound them by free memory."""
    largest = max((p.stat().st_size for p in ds_dir.glob("*optim_states.pt")), default=1)
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, min(4, len(os.sched_getaffinity(0)), free // (3 * largest)))


def _check_space(path: Path) -> None:
    # The converter writes every optimizer fragment to a temporary folder and then merges them: about
    # twice the optimizer files at its peak. Refusing up front beats failing after an hour of writes.
    ds = path / "ds"
    needed = 2 * _size(ds)
    free = shutil.disk_usage(path).free
    if free < needed:
        raise ResumeError(
            f"elastic resume needs ~{needed / 2**30:.1f} GiB free next to {path} to convert it to a universal "
            f"checkpoint; {free / 2**30:.1f} GiB are free (resume with the world size that saved it instead)"
        )


def _convert(path: Path) -> dict[str, Any]:
    """Rank 0: checkpoint-N/ds → checkpoint-N/universal (atomic). In a subprocess: the converter forks
    workers (unsafe from a process with NCCL/gloo threads) and its peak memory is returned at exit."""
    tmp = path / f"{UNIVERSAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _check_space(path)
    tmp.mkdir()
    workers = _workers(path / "ds")
    cmd = [sys.executable, "-m", "xlam_hpc.train.elastic", str(path / "ds"), str(tmp / "ds"), str(workers)]
    # The converter only reads and writes CPU tensors: keep it off the accelerators the ranks use.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}
    started = time.monotonic()
    with (tmp / "convert.log").open("w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = (tmp / "convert.log").read_text(errors="replace")[-2000:]
        raise ResumeError(f"converting {path.name} to a universal checkpoint failed (exit {code}):\n{tail}")
    info = {
        "seconds": round(time.monotonic() - started, 2),
        "bytes": _size(tmp),
        "source_bytes": _size(path / "ds"),
        "workers": workers,
    }
    (tmp / _DONE).write_text(json.dumps(info) + "\n")
    for p in tmp.rglob("*"):  # durable before the rename publishes it
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    fsync_dir(tmp)
    tmp.rename(path / UNIVERSAL)
    fsync_dir(path)
    return info


def _convert_main(src: str, dst: str, workers: int) -> None:
    """The converter process: DeepSpeed's ds_to_universal, then drop the weights from its copy of the
    model-states file."""
    import argparse
    import signal

    import torch
    from deepspeed.checkpoint import ds_to_universal

    # A stop signal (preemption) reaches every process of the job: the ranks only flag it and save after
    # their next step, so the conversion they wait for must finish too, not die half-way.
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    args = argparse.Namespace(
        input_folder=src,
        output_folder=dst,
        num_extract_workers=workers,
        num_merge_workers=max(1, workers // 2),
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # a plain HF model has no Megatron-style universal_checkpoint_info
    )
    ds_to_universal.main(args)
    # Every rank reads this file on load (step counters, LR scheduler, client state); a universal load
    # takes the weights from zero/*/fp32.pt instead, so the copy's 16-bit module (ZeRO-2: the whole
    # model, 14 GiB at 7B) would only cost host RAM on every rank at once.
    for f in Path(dst).glob("*model_states.pt"):
        state = torch.load(f, map_location="cpu", mmap=True, weights_only=False)
        if isinstance(state.get("module"), dict) and state["module"]:
            state["module"] = {}
            torch.save(state, f.with_suffix(".tmp"))
            del state
            os.replace(f.with_suffix(".tmp"), f)


def ensure_universal(path: Path, coll: Collectives) -> dict[str, Any]:
    """Collective: checkpoint-N/universal exists when this returns on any rank. Returns its info, with
    "reused" true when an earlier resume had converted it."""
    done = path / UNIVERSAL / _DONE
    failed = path / _FAILED
    reused = done.is_file() if coll.rank == 0 else None
    if coll.rank == 0 and not reused:
        failed.unlink(missing_ok=True)
    reused = coll.broadcast_object(reused)  # every rank takes the same branch
    if not reused:
        # Other ranks poll for the result instead of waiting in a collective: converting a 7B checkpoint
        # can outlast the process-group timeout, and an idle rank costs nothing while it polls.
        if coll.rank == 0:
            try:
                _convert(path)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}\n")
                raise
        else:
            while not done.is_file():
                if failed.is_file():
                    raise ResumeError(f"rank 0 could not convert {path.name}: {failed.read_text().strip()}")
                time.sleep(_POLL_S)
    coll.barrier()
    return {**json.loads(done.read_text()), "reused": bool(reused)}


@contextlib.contextmanager
def _universal_mode(engine: Any):
    from torch.utils.serialization import config as serialization

    # DeepSpeed reads "checkpoint": {"load_universal"} only inside load_checkpoint (engine.py 0.19.8:
    # load_universal_checkpoint() is called by the load path alone), so switching it for one load is
    # equivalent to building the engine with it, without making same-world-size resumes universal.
    config = engine._config
    before = config.load_universal_checkpoint, serialization.load.mmap
    config.load_universal_checkpoint = True
    # DeepSpeed torch.loads each parameter's whole fp32/exp_avg/exp_avg_sq file and keeps a slice (under
    # ZeRO-3 every rank opens every file): memory-mapped, a rank reads only the pages of its slice, not
    # the whole universal checkpoint (7B: 84 GB per rank, x64 ranks, from the shared filesystem).
    serialization.load.mmap = True
    try:
        yield
    finally:
        config.load_universal_checkpoint, serialization.load.mmap = before


def load_universal(engine: Any, path: Path) -> None:
    """Load checkpoint-N/universal into `engine` (any world size): weights, optimizer, LR scheduler."""
    with _universal_mode(engine):
        loaded, _ = engine.load_checkpoint(
            str(path / UNIVERSAL), tag="ds", load_optimizer_states=True, load_lr_scheduler_states=True
        )
    if loaded is None:
        raise ResumeError(f"DeepSpeed found no universal checkpoint in {path / UNIVERSAL}")


def resume_elastic(
    engine: Any, path: Path, manifest: dict[str, Any], coll: Collectives, loader: Any, *, seed: int, force: bool
) -> int:
    """Restore `path` (saved by another world size) on every rank; the step to continue from."""
    from xlam_hpc.stream.seeding import seed_rank

    started = time.monotonic()
    step = int(manifest["step"])
    info = ensure_universal(path, coll)
    load_universal(engine, path)
    # The loader state is global (samples consumed by all ranks): any saving rank's file is the same one.
    loader.load_state_dict(json.loads((path / "loader-rank0.json").read_text()), allow_fingerprint_mismatch=force)
    seed_rank(seed, coll.rank, step)  # the old per-rank RNG streams do not map onto the new ranks
    log.info(
        "elastic resume from %s (step %d): %d → %d ranks; universal checkpoint %s (conversion %.2f s, %.2f GiB "
        "from %.2f GiB); resumed in %.2f s",
        path.name,
        step,
        manifest["world_size"],
        coll.world_size,
        "reused" if info["reused"] else "converted",
        info["seconds"],
        info["bytes"] / 2**30,
        info["source_bytes"] / 2**30,
        time.monotonic() - started,
    )
    return step


if __name__ == "__main__":
    _convert_main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
