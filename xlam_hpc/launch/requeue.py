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

The budgets fit runs that last weeks:
- failures count the failures in a row *without progress*: a checkpoint newer than the newest one at the
  last failure resets the count, so two node failures a week apart never stop a run, while a run that
  crashes again and again from the same checkpoint stops after max_failures requeues.
- preemptions reset the same way. A preemption is not the run's fault, and one that was recorded has saved
  a checkpoint on its way out, so a run on a preemptible partition goes on for as long as it progresses;
  the budget stops only a run that is preempted again and again without a new checkpoint.
- timeouts stay a total: every time-limit stop saves a checkpoint, so "without progress" would never bind;
  as a total, max_timeouts caps how many allocations a run may use (set it to at least the run's length
  divided by the time limit). `xlam-hpc status` shows what is used of each.

The ledger keeps the totals under "timeouts"/"preemptions"/"failures" (as before) and the budgets under
"budgets"; a ledger written before budgets existed is read with budgets equal to its totals.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlam_hpc.runenv.stops import REQUEUE_EXIT_CODE, clear_stop, read_stop, record_stop
from xlam_hpc.train.checkpoint import list_checkpoints

__all__ = [
    "KINDS",
    "Decision",
    "budgets_now",
    "decide",
    "ledger_path",
    "newest_checkpoint",
    "read_ledger",
    "record_stop",
]

_TIMEOUT_SIGNALS = {"SIGUSR1", "SIGUSR2"}
KINDS = {"timeout": "timeouts", "preemption": "preemptions", "failure": "failures"}
"""Exit reason → its budget."""
_SINCE_PROGRESS = {"failures", "preemptions"}


def ledger_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / "launch" / "ledger.json"


@dataclass
class Decision:
    action: str
    """'done', 'requeue' or 'stop' (budget exhausted)."""
    reason: str
    """'finished', 'timeout', 'preemption' or 'failure'."""
    counts: dict[str, int]
    """What each budget has used now (failures and preemptions: since the last progress)."""

    def line(self) -> str:
        return f"{self.action} {self.reason} " + " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def newest_checkpoint(output_dir: str | Path) -> dict[str, Any] | None:
    """{"name", "step", "created"} of the newest committed checkpoint (a checkpoint-N folder exists only
    once its manifest is written), or None. Manifests only: the decision must be quick."""
    for _, path in list_checkpoints(Path(output_dir)):
        manifest = _read_json(path / "manifest.json")
        if isinstance(manifest.get("step"), int):
            return {"name": path.name, "step": manifest["step"], "created": manifest.get("created")}
    return None


def read_ledger(output_dir: str | Path) -> dict[str, Any]:
    """The ledger, with budgets filled in for one written before they existed."""
    ledger = _read_json(ledger_path(output_dir))
    ledger.setdefault("history", [])
    budgets = ledger.setdefault("budgets", {})
    for reason, key in KINDS.items():
        ledger.setdefault(key, 0)
        if key not in budgets:
            times = [h.get("time") for h in ledger["history"] if h.get("reason") == reason]
            budgets[key] = {"used": ledger[key], "checkpoint": None, "time": times[-1] if times else None}
    return ledger


def _progressed(entry: dict[str, Any], newest: dict[str, Any] | None) -> bool:
    """A checkpoint newer than the one seen at this budget's last event (by step; by time for old ledgers)."""
    if newest is None:
        return False
    if entry.get("checkpoint") is not None:
        return newest["step"] > entry["checkpoint"]
    seen = entry.get("time")
    return seen is None or (newest.get("created") or 0) > seen


def budgets_now(output_dir: str | Path, ledger: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Per budget: {"used", "since"}: what the next decision starts from (a failure or preemption budget is
    back to 0 once a newer checkpoint exists); "since" is the checkpoint its count runs from."""
    ledger = read_ledger(output_dir) if ledger is None else ledger
    return _effective(ledger, newest_checkpoint(output_dir))


def _effective(ledger: dict[str, Any], newest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    out = {}
    for key in KINDS.values():
        entry = ledger["budgets"][key]
        reset = key in _SINCE_PROGRESS and entry["used"] and _progressed(entry, newest)
        out[key] = {"used": 0 if reset else entry["used"], "since": entry.get("checkpoint")}
    return out


def decide(
    output_dir: str | Path,
    exit_code: int,
    *,
    max_timeouts: int,
    max_preemptions: int,
    max_failures: int,
    job_id: str | None = None,
) -> Decision:
    """Classify the exit, update the ledger, and say whether to run again (see the module docstring)."""
    out = Path(output_dir)
    ledger = read_ledger(out)
    stop = read_stop(out)
    if exit_code == 0:
        reason = "finished"
    elif exit_code == REQUEUE_EXIT_CODE or stop:
        # A recorded stop means the ranks saved and exited 75; srun itself may still report 128+signal,
        # because Slurm signals srun too at preemption.
        reason = "timeout" if stop.get("signal") in _TIMEOUT_SIGNALS else "preemption"
    else:
        reason = "failure"
    limits = {"timeouts": max_timeouts, "preemptions": max_preemptions, "failures": max_failures}
    now = time.time()
    action = "done"
    newest = newest_checkpoint(out)
    if reason in KINDS:
        key = KINDS[reason]
        used = _effective(ledger, newest)[key]["used"] + 1
        ledger[key] += 1
        ledger["budgets"][key] = {"used": used, "checkpoint": newest["step"] if newest else None, "time": now}
        action = "requeue" if used <= limits[key] else "stop"
    ledger["limits"] = limits
    ledger["history"].append(
        {
            "time": now,
            "job_id": job_id or os.environ.get("SLURM_JOB_ID"),
            "exit_code": exit_code,
            "reason": reason,
            "action": action,
            "signal": stop.get("signal"),
            "step": stop.get("step"),
            "checkpoint": newest["step"] if newest else None,
        }
    )
    ledger_file = ledger_path(out)
    ledger_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = ledger_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger, indent=1) + "\n")
    tmp.replace(ledger_file)
    clear_stop(out)  # a stop is counted once
    counts = {key: b["used"] for key, b in _effective(ledger, newest).items()}
    return Decision(action, reason, counts)
