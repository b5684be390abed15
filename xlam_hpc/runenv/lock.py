"""One job per output_dir: an exclusive flock held by the training process (rank 0) for its whole life."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError

__all__ = ["LOCK_NAME", "acquire_output_lock"]

LOCK_NAME = ".xlam-hpc.lock"


def acquire_output_lock(output_dir: Path) -> Any:
    """Exclusive flock on OUTPUT_DIR/.xlam-hpc.lock held by the training process (rank 0) for its life;
    released by the kernel when it dies, so a requeued job takes it over. Returns the open file."""
    output_dir.mkdir(parents=True, exist_ok=True)
    f = (output_dir / LOCK_NAME).open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise ConfigError(
            f"{output_dir} is in use by another running job ({holder}); two jobs must not share an output_dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename} job {os.environ.get('SLURM_JOB_ID', 'local')}\n")
    f.flush()
    return f
