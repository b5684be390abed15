"""`xlam-hpc status [DIR]`: state, restarts, last valid checkpoint and logs of runs and sweeps.

Never uses sacct (accounting is often off): Slurm state comes from `squeue -t all` (which forgets jobs
after MinJobAge), then `scontrol show job`, and otherwise from what the job folders say (FINISHED
marker, requeue ledger, checkpoints). "restarts" and "requeues" are the run's totals across all its jobs
(a resubmission with the same output_dir adds to them; "jobs" counts the submissions); "budgets" what each
requeue budget has used and allows (failures and preemptions count since the last progress: see
launch/requeue.py). A run whose last stop was a failure shows its cause: the failing rank's last error line
and the log it is in (launch/causes.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.launch.requeue import KINDS, budgets_now, read_ledger

__all__ = ["TERMINAL", "budget_line", "run_status", "slurm_job_state", "status_report", "wait_slurm"]

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
}


def _run(cmd: list[str]) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def slurm_job_state(job_id: str) -> tuple[str | None, int | None]:
    """(state, restarts) from squeue, else scontrol; (None, None) when Slurm no longer knows the job."""
    out = _run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%i"])
    state = out.split("|")[0].strip() if out and out.strip() else None
    detail = _run(["scontrol", "show", "job", job_id])
    restarts = None
    if detail:
        if state is None:
            m = re.search(r"JobState=(\S+)", detail)
            state = m.group(1) if m else None
        m = re.search(r"Restarts=(\d+)", detail)
        restarts = int(m.group(1)) if m else None
    return state, restarts


def _last_checkpoint(out: Path) -> int | None:
    from xlam_hpc.train.checkpoint import list_checkpoints, verify_checkpoint

    for step, path in list_checkpoints(out):
        if verify_checkpoint(path, hashes=False) is None:  # sizes only: status must be quick
            return step
    return None


def _limits(out: Path, ledger: dict[str, Any]) -> dict[str, int]:
    """The limits the last decision applied; before any: the recipe's launch section, else the defaults."""
    from xlam_hpc.config import load_yaml
    from xlam_hpc.launch.config import LaunchConfig

    launch: Any = {}
    if (out / "config.yaml").exists():
        with contextlib.suppress(ConfigError):  # status reports what it can
            launch = load_yaml(out / "config.yaml").get("launch")
    launch = launch if isinstance(launch, dict) else {}
    defaults = LaunchConfig()
    given = ledger.get("limits", {})
    return {k: int(given.get(k, launch.get(f"max_{k}", getattr(defaults, f"max_{k}")))) for k in KINDS.values()}


def budget_line(budgets: dict[str, dict[str, Any]]) -> str:
    """'failures 1/2 since checkpoint-400, timeouts 3/10, preemptions 0/10'."""
    parts = []
    for key in ("failures", "timeouts", "preemptions"):
        b = budgets[key]
        since = ""
        if key != "timeouts" and b["used"]:
            since = " without a checkpoint" if b["since"] is None else f" since checkpoint-{b['since']}"
        parts.append(f"{key} {b['used']}/{b['limit']}{since}")
    return ", ".join(parts)


def _restarts(ledger: dict[str, Any], last_job: str | None, slurm_restarts: int | None) -> tuple[int, dict[str, int]]:
    """(total, per job): a ledger entry with action "requeue" is one restart (decided by the batch script or
    added at the next start); Slurm's own count of the last job covers a restart whose start is not counted yet."""
    per_job: dict[str, int] = {}
    for h in ledger.get("history", []):
        if h.get("action") == "requeue":
            key = str(h.get("job_id"))
            per_job[key] = per_job.get(key, 0) + 1
    if last_job is not None and slurm_restarts is not None and slurm_restarts > per_job.get(last_job, 0):
        per_job[last_job] = slurm_restarts
    return sum(per_job.values()), per_job


def _cause(out: Path, ledger: dict[str, Any], state: str, last_job: str | None) -> dict[str, Any] | None:
    """The last failure's cause, when the run's last stop was a failure (or Slurm says the job failed)."""
    history = ledger.get("history", [])
    decisions = [h for h in history if h.get("reason") not in ("start", "resubmitted")]
    if decisions and decisions[-1].get("reason") == "failure":
        from xlam_hpc.launch.causes import failure_cause

        return decisions[-1].get("cause") or failure_cause(out, decisions[-1].get("job_id"))
    if state in {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY"}:
        from xlam_hpc.launch.causes import failure_cause

        return failure_cause(out, last_job)
    return None


def run_status(out: Path) -> dict[str, Any]:
    """Status of one run directory (an output_dir)."""
    subs = (
        [json.loads(x) for x in (out / "launch" / "submissions.jsonl").read_text().splitlines() if x.strip()]
        if (out / "launch" / "submissions.jsonl").exists()
        else []
    )
    ledger = read_ledger(out)
    limits = _limits(out, ledger)
    budgets = {k: v | {"limit": limits[k]} for k, v in budgets_now(out, ledger).items()}
    last = subs[-1] if subs else {}
    state, restarts = (None, None)
    if last.get("cluster") == "slurm":
        state, restarts = slurm_job_state(last["job_id"])
    finished = (out / "FINISHED").exists()
    if state is None:
        history = [h for h in ledger.get("history", []) if h.get("reason") not in ("start", "resubmitted")]
        if finished:
            state = "FINISHED"
        elif history and history[-1]["action"] == "stop":
            state = f"GAVE_UP ({history[-1]['reason']})"
        else:
            state = "UNKNOWN" if subs else "NOT_SUBMITTED"
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    last_job = str(last["job_id"]) if last.get("job_id") is not None else None
    total, per_job = _restarts(ledger, last_job, restarts if last.get("cluster") == "slurm" else None)
    return {
        "output_dir": str(out),
        "job_id": last.get("job_id"),
        "cluster": last.get("cluster"),
        "state": state,
        "finished": finished,
        "jobs": len(subs),
        "restarts": total,
        "restarts_by_job": per_job,
        "requeues": {k: ledger.get(k, 0) for k in ("timeouts", "preemptions", "failures")},
        "budgets": budgets,
        "budget_line": budget_line(budgets),
        "cause": _cause(out, ledger, state, last_job),
        "last_checkpoint_step": _last_checkpoint(out),
        "logs": last.get("logs"),
        "final_loss": metrics.get("final_loss"),
    }


def status_report(directory: str | Path) -> list[dict[str, Any]]:
    """A run directory, or a sweep directory (sweep.json lists its tasks)."""
    d = Path(directory)
    if (d / "sweep.json").exists():
        sweep = json.loads((d / "sweep.json").read_text())
        return [run_status(Path(t["output_dir"])) | {"task": t["index"]} for t in sweep["tasks"]]
    if not (d / "launch").exists() and not (d / "config.yaml").exists():
        raise ConfigError(f"{d} is neither a run output_dir nor a sweep directory")
    return [run_status(d)]


def wait_slurm(
    job_ids: list[str], out: Path, *, timeout_s: float = 3600, poll_s: float = 3.0, log: Any = print
) -> None:
    """Wait until the jobs are terminal and not requeued (a requeued job goes back to PENDING)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = {j: slurm_job_state(j)[0] for j in job_ids}
        if all(s in TERMINAL or s is None for s in states.values()):
            time.sleep(poll_s)  # a teardown requeue may still be on its way
            if all(slurm_job_state(j)[0] in TERMINAL | {None} for j in job_ids):
                log(f"jobs {', '.join(job_ids)} ended: {states}")
                return
        time.sleep(poll_s)
    raise TimeoutError(f"jobs {job_ids} still active after {timeout_s} s")
