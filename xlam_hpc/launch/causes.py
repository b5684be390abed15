"""Why did a job fail? The failing rank's last error line, and the log it is in, for the ledger and `status`.

Logs: submitit's per-rank files (OUTPUT_DIR/launch/submitit/JOBID/JOBID_RANK_log.err, appended across
restarts) or, for the slurm/ templates, the job's one log (trainer lines start with "[restart N rank R]").
Only the last run of the job is read (after the last start marker). A rank whose last error is a Python
exception, a CUDA/NCCL error or an xlam-hpc error is the failing one; errors that only echo another rank's
death (connection closed/reset by peer) count only when nothing else is found; a rank that died without a
word (SIGKILL, OOM killer) is named by srun's "task N: Killed" line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["failure_cause", "last_error"]

_TAIL = 256 * 1024
_START = re.compile(
    r"Starting with JobEnvironment|xlam-hpc: job \S+ restart \d+:|\] job \S+ (\(id \S+\) )?restart \d+ on "
)
_PREFIX = re.compile(r"^\[restart \d+ rank (\d+)\]\s*")
_ERROR = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)(?::|$))"
    r"|^xlam-hpc [\w-]+: error:"
    r"|CUDA out of memory|NCCL (?:error|WARN)|Segmentation fault|core dumped"
    r"|^srun: error: .*task"
    r"|^slurmstepd\S*: error: .*(?:oom|OOM|Killed|CANCELLED)"
)
_ECHO = re.compile(r"[Cc]onnection (?:closed|reset) by peer|Broken pipe|remote process exited|gloo", re.IGNORECASE)
_SRUN_TASK = re.compile(r"srun: error: \S+: tasks? (\d+)(?:-(\d+))?: (Killed|Exited|Segmentation|Aborted)")


def _last_run(text: str) -> str:
    starts = [m.start() for m in _START.finditer(text)]
    return text[starts[-1] :] if starts else text


def last_error(text: str) -> tuple[str | None, bool]:
    """(last error line of a log's last run, True when it is only an echo of another rank's death)."""
    found = None
    for raw in _last_run(text).splitlines():
        line = _PREFIX.sub("", raw.rstrip())
        if _ERROR.search(line):
            found = line.strip()
    if found is None:
        return None, False
    return found, bool(_ECHO.search(found))


def _read_tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _log_of(out: Path, job_id: str | None) -> Path | None:
    path = out / "launch" / "submissions.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    for row in reversed(rows):
        if job_id is None or str(row.get("job_id")) == str(job_id):
            return Path(row["logs"]) if row.get("logs") else None
    return None


def failure_cause(out: str | Path, job_id: str | None = None) -> dict[str, Any] | None:
    """{"rank", "line", "log"} for the failing rank of job_id's last run (the last job when None), or None."""
    logs = _log_of(Path(out), job_id)
    if logs is None or not logs.exists():
        return None
    files = sorted(logs.glob("*_log.err")) if logs.is_dir() else [logs]
    primary, echoes, srun_line = [], [], None
    for path in files:
        text = _read_tail(path)
        m = re.search(r"_(\d+)_log\.err$", path.name)
        rank = int(m.group(1)) if m else None
        if rank is None:  # one log for every rank (the templates): split it by the "[restart N rank R]" prefix
            per_rank: dict[int | None, list[str]] = {}
            for line in _last_run(text).splitlines():
                pm = _PREFIX.match(line)
                per_rank.setdefault(int(pm.group(1)) if pm else None, []).append(line)
            chunks = list(per_rank.items())
        else:
            chunks = [(rank, _last_run(text).splitlines())]
        for r, lines in chunks:
            for line in lines:
                sm = _SRUN_TASK.search(line)
                if sm and srun_line is None:  # srun reports the first death first; the others were its kills
                    srun_line = (int(sm.group(1)), line.strip(), path)
            line, echo = last_error("\n".join(lines))
            if line and not line.startswith("srun: error:"):
                (echoes if echo else primary).append({"rank": r, "line": line, "log": str(path)})
    if primary:
        return primary[0]
    if srun_line is not None:
        rank, line, path = srun_line
        own = next((p for p in files if re.search(rf"_{rank}_log\.err$", p.name)), path)
        return {"rank": rank, "line": line, "log": str(own)}
    return echoes[0] if echoes else None
