"""Should a finished job step be run again? One decision for every launcher, with separate budgets.

Called after the ranks exit, by whatever supervises them: the batch script's teardown on Slurm (it then
runs `scontrol requeue` on the host, where scontrol exists even when the job runs in a container), the
plain sbatch templates in slurm/, and `xlam-hpc submit --cluster local`. The ledger lives in
OUTPUT_DIR/launch/ledger.json; the trainer records why it stopped in OUTPUT_DIR/launch/last_stop.json.

exit 0                        → done
exit 75 (or 128+signal from srun) after a recorded stop:
    SIGUSR1/SIGUSR2 → time limit ahead: 'timeouts' budget
    SIGTERM         → preemption / scontrol requeue / scancel: 'preemptions' budget
anything else                 → failure (a rank killed, a crash): 'failures' budget, resume from the
                                 last valid checkpoint
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlam_hpc.runenv.stops import REQUEUE_EXIT_CODE, clear_stop, read_stop, record_stop

__all__ = ["Decision", "decide", "ledger_path", "record_stop"]

_TIMEOUT_SIGNALS = {"SIGUSR1", "SIGUSR2"}


def ledger_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / "launch" / "ledger.json"


@dataclass
class Decision:
    action: str
    """'done', 'requeue' or 'stop' (budget exhausted)."""
    reason: str
    """'finished', 'timeout', 'preemption' or 'failure'."""
    counts: dict[str, int]

    def line(self) -> str:
        return f"{self.action} {self.reason} " + " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def decide(
    output_dir: str | Path,
    exit_code: int,
    *,
    max_timeouts: int,
    max_preemptions: int,
    max_failures: int,
    job_id: str | None = None,
) -> Decision:
    """Classify the exit, update the ledger, and say whether to run again."""
    out = Path(output_dir)
    ledger_file = ledger_path(out)
    ledger = _read_json(ledger_file) or {"timeouts": 0, "preemptions": 0, "failures": 0, "history": []}
    stop = read_stop(out)
    if exit_code == 0:
        reason = "finished"
    elif exit_code == REQUEUE_EXIT_CODE or stop:
        # A recorded stop means the ranks saved and exited 75; srun itself may still report 128+signal,
        # because Slurm signals srun too at preemption.
        reason = "timeout" if stop.get("signal") in _TIMEOUT_SIGNALS else "preemption"
    else:
        reason = "failure"
    budgets = {
        "timeout": ("timeouts", max_timeouts),
        "preemption": ("preemptions", max_preemptions),
        "failure": ("failures", max_failures),
    }
    action = "done"
    if reason in budgets:
        key, limit = budgets[reason]
        ledger[key] += 1
        action = "requeue" if ledger[key] <= limit else "stop"
    ledger["history"].append(
        {
            "time": time.time(),
            "job_id": job_id or os.environ.get("SLURM_JOB_ID"),
            "exit_code": exit_code,
            "reason": reason,
            "action": action,
            "signal": stop.get("signal"),
            "step": stop.get("step"),
        }
    )
    ledger_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = ledger_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger, indent=1) + "\n")
    tmp.replace(ledger_file)
    clear_stop(out)  # a stop is counted once
    counts = {k: ledger[k] for k in ("timeouts", "preemptions", "failures")}
    return Decision(action, reason, counts)
