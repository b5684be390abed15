"""Should a finished job step be run again? One decision for every launcher, with separate budgets.

Called after the ranks exit, by whatever supervises them: the batch script's teardown on Slurm (it then
runs `scontrol requeue` on the host, where scontrol exists even when the job runs in a container), the
plain sbatch templates in slurm/, and `xlam-hpc submit --cluster local`. The ledger lives in
OUTPUT_DIR/launch/ledger.json; the trainer records why it stopped in OUTPUT_DIR/launch/last_stop.json.

exit 0                        → done
exit 75 (or 128+signal from srun) after a recorded stop:
    SIGUSR1/SIGUSR2 → time limit ahead: 'timeouts' budget
    SIGTERM         → preemption / scontrol requeue / scancel: 'preemptions' budget
exit ≠ 0 without a recorded stop, after the batch shell got a SIGTERM (OUTPUT_DIR/launch/batch_signal:
    `scancel --signal=TERM --full`, a drain; srun SIGKILLs the ranks when it gets a TERM itself, so they
    may not have saved) → preemption: 'preemptions' budget, resume from the last valid checkpoint
anything else                 → failure (a rank killed, a crash): 'failures' budget, resume from the
                                 last valid checkpoint; the failing rank's last error line and log go
                                 into the history ("cause")

Every start of a Slurm job is counted too (`start`, run by the batch script before srun): a restart that no
decision asked for (Slurm requeued the job itself: `scontrol requeue`, preemption, or the batch shell was
killed before deciding) is added from SLURM_RESTART_COUNT and the last recorded stop, so the budgets and
`xlam-hpc status` count every restart. The ledger belongs to the output_dir: a resubmission (a new job id)
adds to the same totals.

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
    "job_key",
    "ledger_path",
    "newest_checkpoint",
    "note_start",
    "read_ledger",
    "record_stop",
]

_TIMEOUT_SIGNALS = {"SIGUSR1", "SIGUSR2"}
BATCH_SIGNAL = "batch_signal"
"""OUTPUT_DIR/launch/batch_signal: written by the batch shell's TERM trap (see launch/slurm.py)."""
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


def job_key() -> str | None:
    """This Slurm job as submissions.jsonl and scontrol name it (an array task as ARRAYID_TASK), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _restart_count() -> int | None:
    raw = os.environ.get("SLURM_RESTART_COUNT")
    if raw is None:
        return 0 if os.environ.get("SLURM_JOB_ID") else None
    try:
        return int(raw)
    except ValueError:
        return None


def _batch_signal(out: Path) -> bool:
    return (out / "launch" / BATCH_SIGNAL).exists()


def _count(
    ledger: dict[str, Any], reason: str, newest: dict[str, Any] | None, limits: dict[str, int], now: float
) -> str:
    key = KINDS[reason]
    used = _effective(ledger, newest)[key]["used"] + 1
    ledger[key] += 1
    ledger["budgets"][key] = {"used": used, "checkpoint": newest["step"] if newest else None, "time": now}
    return "requeue" if used <= limits[key] else "stop"


def _write(out: Path, ledger: dict[str, Any]) -> None:
    ledger_file = ledger_path(out)
    ledger_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = ledger_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger, indent=1) + "\n")
    tmp.replace(ledger_file)


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
    batch_term = _batch_signal(out)
    if exit_code == 0:
        reason = "finished"
    elif exit_code == REQUEUE_EXIT_CODE or stop:
        # A recorded stop means the ranks saved and exited 75; srun itself may still report 128+signal,
        # because Slurm signals srun too at preemption.
        reason = "timeout" if stop.get("signal") in _TIMEOUT_SIGNALS else "preemption"
    elif batch_term:
        reason = "preemption"  # TERM to the whole job: srun killed the ranks before they could save
    else:
        reason = "failure"
    limits = {"timeouts": max_timeouts, "preemptions": max_preemptions, "failures": max_failures}
    now = time.time()
    action = "done"
    newest = newest_checkpoint(out)
    if reason in KINDS:
        action = _count(ledger, reason, newest, limits, now)
    ledger["limits"] = limits
    entry: dict[str, Any] = {
        "time": now,
        "job_id": job_id or job_key(),
        "restart": _restart_count() if job_id is None else None,
        "exit_code": exit_code,
        "reason": reason,
        "action": action,
        "signal": stop.get("signal") or ("SIGTERM" if batch_term and reason == "preemption" else None),
        "saved": bool(stop),
        "step": stop.get("step"),
        "checkpoint": newest["step"] if newest else None,
    }
    if reason == "failure":
        from xlam_hpc.launch.causes import failure_cause

        entry["cause"] = failure_cause(out, entry["job_id"])
    ledger["history"].append(entry)
    _write(out, ledger)
    clear_stop(out)  # a stop is counted once
    (out / "launch" / BATCH_SIGNAL).unlink(missing_ok=True)
    counts = {key: b["used"] for key, b in _effective(ledger, newest).items()}
    return Decision(action, reason, counts)


def note_start(
    output_dir: str | Path,
    *,
    max_timeouts: int,
    max_preemptions: int,
    max_failures: int,
    job: str | None = None,
    restart: int | None = None,
) -> Decision:
    """Count this start of a Slurm job (run by the batch script before srun; idempotent).

    Restart k of job J is accounted for when a decision of J's run k-1 asked for it ("requeue"); otherwise
    Slurm requeued the job on its own (`scontrol requeue`, preemption, a batch shell killed before its
    decision) and the restart is added here: a timeout or a preemption after a recorded stop (the ranks
    saved), else a preemption without a save. The first start of a new job id for this output_dir (a
    resubmission) is no restart; a stop left by the previous job is recorded and cleared, so it cannot be
    mistaken for this job's. Returns 'stop ...' when the added restarts use up a budget."""
    out = Path(output_dir)
    job = job or job_key() or "?"
    restart = _restart_count() if restart is None else restart
    restart = restart or 0
    ledger = read_ledger(out)
    limits = {"timeouts": max_timeouts, "preemptions": max_preemptions, "failures": max_failures}
    starts = ledger.setdefault("starts", {})
    seen = starts.get(job, -1)
    now = time.time()
    newest = newest_checkpoint(out)
    stop = read_stop(out)
    batch_term = _batch_signal(out)
    action, reason = "start", "start"
    decided = {h.get("restart") for h in ledger["history"] if h.get("job_id") == job and h.get("action") == "requeue"}
    for k in range(max(seen + 1, 1), restart + 1):
        if (k - 1) in decided:
            continue
        last = k == restart
        signal_name = stop.get("signal") if last else None
        reason = "timeout" if signal_name in _TIMEOUT_SIGNALS else "preemption"
        action = _count(ledger, reason, newest, limits, now)
        ledger["history"].append(
            {
                "time": now,
                "job_id": job,
                "restart": k - 1,
                "exit_code": None,
                "reason": reason,
                "action": action,
                "by": "slurm",  # requeued by Slurm, not by a decision of the batch script
                "signal": signal_name or ("SIGTERM" if last and batch_term else None),
                "saved": bool(last and stop),
                "step": stop.get("step") if last else None,
                "checkpoint": newest["step"] if newest else None,
            }
        )
    if restart == 0 and seen < 0 and (stop or batch_term) and any(h.get("job_id") != job for h in ledger["history"]):
        ledger["history"].append(
            {
                "time": now,
                "job_id": job,
                "restart": None,
                "reason": "resubmitted",
                "action": "start",
                "signal": stop.get("signal"),
                "step": stop.get("step"),
                "saved": bool(stop),
            }
        )
    starts[job] = max(seen, restart)
    ledger["limits"] = limits
    _write(out, ledger)
    if stop or batch_term:
        clear_stop(out)
        (out / "launch" / BATCH_SIGNAL).unlink(missing_ok=True)
    counts = {key: b["used"] for key, b in _effective(ledger, newest).items()}
    return Decision("stop" if action == "stop" else "start", reason, counts)


def _main(argv: list[str] | None = None) -> int:
    """`python -m xlam_hpc.launch.requeue start OUTPUT_DIR --max-...`: what the batch script runs before srun."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m xlam_hpc.launch.requeue")
    p.add_argument("command", choices=["start"])
    p.add_argument("output_dir")
    p.add_argument("--max-timeouts", type=int, default=10)
    p.add_argument("--max-preemptions", type=int, default=10)
    p.add_argument("--max-failures", type=int, default=2)
    args = p.parse_args(argv)
    d = note_start(
        args.output_dir,
        max_timeouts=args.max_timeouts,
        max_preemptions=args.max_preemptions,
        max_failures=args.max_failures,
    )
    print(d.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
