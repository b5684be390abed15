"""`xlam-hpc status [DIR]`: state, restarts, last valid checkpoint and logs of runs and sweeps.

Never uses sacct (accounting is often off): Slurm state comes from `squeue -t all` (which forgets jobs
after MinJobAge), then `scontrol show job`, and otherwise from what the job folders say (FINISHED
marker, requeue ledger, checkpoints).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.launch.requeue import ledger_path

__all__ = ["TERMINAL", "run_status", "slurm_job_state", "status_report", "wait_slurm"]

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
    from xlam_hpc.train.checkpoint import verify_checkpoint

    steps = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    for step, path in reversed(steps):
        if verify_checkpoint(path, hashes=False) is None:  # sizes only: status must be quick
            return step
    return None


def run_status(out: Path) -> dict[str, Any]:
    """Status of one run directory (an output_dir)."""
    subs = (
        [json.loads(x) for x in (out / "launch" / "submissions.jsonl").read_text().splitlines() if x.strip()]
        if (out / "launch" / "submissions.jsonl").exists()
        else []
    )
    ledger = json.loads(ledger_path(out).read_text()) if ledger_path(out).exists() else {}
    last = subs[-1] if subs else {}
    state, restarts = (None, None)
    if last.get("cluster") == "slurm":
        state, restarts = slurm_job_state(last["job_id"])
    finished = (out / "FINISHED").exists()
    if state is None:
        history = ledger.get("history", [])
        if finished:
            state = "FINISHED"
        elif history and history[-1]["action"] == "stop":
            state = f"GAVE_UP ({history[-1]['reason']})"
        else:
            state = "UNKNOWN" if subs else "NOT_SUBMITTED"
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    return {
        "output_dir": str(out),
        "job_id": last.get("job_id"),
        "cluster": last.get("cluster"),
        "state": state,
        "finished": finished,
        "restarts": restarts if restarts is not None else len(ledger.get("history", [])),
        "requeues": {k: ledger.get(k, 0) for k in ("timeouts", "preemptions", "failures")},
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
