"""The stop record: why the trainer stopped early, written by rank 0 and read once by the requeue decision.

OUTPUT_DIR/launch/last_stop.json = {"signal", "step", "time"}. The trainer writes it after a signal-triggered
save and exits REQUEUE_EXIT_CODE; whatever supervises the ranks (`launch/requeue.py`) classifies the exit
from it and removes it, so each stop is counted once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["REQUEUE_EXIT_CODE", "clear_stop", "read_stop", "record_stop", "stop_path"]

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): temporary failure, run me again


def stop_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / "launch" / "last_stop.json"


def record_stop(output_dir: str | Path, signal_name: str, step: int) -> None:
    """Written by rank 0 after a signal-triggered save."""
    path = stop_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"signal": signal_name, "step": step, "time": time.time()}) + "\n")


def read_stop(output_dir: str | Path) -> dict[str, Any]:
    """The recorded stop, or {} when there is none (or it is unreadable)."""
    try:
        return json.loads(stop_path(output_dir).read_text())
    except (OSError, ValueError):
        return {}


def clear_stop(output_dir: str | Path) -> None:
    stop_path(output_dir).unlink(missing_ok=True)
