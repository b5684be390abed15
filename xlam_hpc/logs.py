"""Log lines that say which restart and which rank wrote them: `[restart 2 rank 1] ...`.

Slurm appends every run of a requeued job to the same file (--open-mode=append), so the restart
count in each line's prefix is how one tells the runs apart.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["restart_count", "setup_logging"]


def restart_count() -> int:
    """Slurm's SLURM_RESTART_COUNT (unset in the first run), or XLAM_HPC_RESTART set by our launchers."""
    for key in ("XLAM_HPC_RESTART", "SLURM_RESTART_COUNT"):
        value = os.environ.get(key)
        if value and value.isdigit():
            return int(value)
    return 0


class _CurrentStderr(logging.StreamHandler):
    """A handler on the sys.stderr of the moment, not the one at setup: a later redirect (or test capture) of
    stderr is followed, and a closed earlier stream is never written to (as logging.lastResort does)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(rank: int, *, level: int = logging.INFO) -> logging.Logger:
    """Root xlam_hpc logger to stderr with the restart/rank prefix (idempotent)."""
    logger = logging.getLogger("xlam_hpc")
    fmt = f"[restart {restart_count()} rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = next((h for h in logger.handlers if getattr(h, "_xlam", False)), None)
    if handler is None:
        handler = _CurrentStderr()
        handler._xlam = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    logger.setLevel(level)
    logger.propagate = False
    return logger
