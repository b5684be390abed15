"""`xlam-hpc submit`: one code path for the local executor (the default) and Slurm, through submitit.

Slurm: the job is submitted and requeues itself from the batch script (see slurm.py). Local: this
process supervises — when the ranks stop with "requeue me" or fail within budget, the same job is
submitted again on the same output_dir (the trainer resumes from its checkpoint).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from xlam_hpc.config import save_yaml
from xlam_hpc.errors import ConfigError
from xlam_hpc.launch.job import TrainJob
from xlam_hpc.launch.requeue import decide
from xlam_hpc.launch.slurm import python_command, submitit_parameters
from xlam_hpc.recipe import Recipe
from xlam_hpc.runenv.lock import LOCK_NAME, acquire_output_lock
from xlam_hpc.runenv.stops import stop_path

__all__ = ["check_container", "dry_run", "launch_preflight", "make_executor", "submit_run"]

_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUE_HOLD", "RESIZING"}


def _submissions(out: Path) -> list[dict[str, Any]]:
    path = out / "launch" / "submissions.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _slurm_state(job_id: str) -> str | None:
    try:
        res = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    states = res.stdout.split()
    return states[0] if states else None


def _refuse_if_active(out: Path) -> None:
    for sub in _submissions(out)[-1:]:
        if sub["cluster"] == "slurm" and _slurm_state(sub["job_id"]) in _ACTIVE:
            raise ConfigError(
                f"{out} belongs to Slurm job {sub['job_id']}, which is still active; wait for it or "
                "use another output_dir"
            )
    lock = out / LOCK_NAME
    if lock.exists():
        acquire_output_lock(out).close()  # raises when a running trainer holds it


def check_container(launch: Any) -> None:
    """launch.container's command exists here (a name on PATH, or an executable path): a typo in it fails every
    task of the job. With `launch.setup` lines (e.g. `module load apptainer`) the command may appear only after
    them, on the node, so a name missing here is accepted then."""
    if not launch.container:
        return
    try:
        words = shlex.split(launch.container)
    except ValueError as exc:
        raise ConfigError(f"launch.container {launch.container!r}: {exc}") from None
    if not words:
        return
    exe = words[0]
    if "/" in exe:
        if not (Path(exe).is_file() and os.access(exe, os.X_OK)):
            raise ConfigError(f"launch.container: {exe} is not an executable file (from {launch.container!r})")
    elif shutil.which(exe) is None and not getattr(launch, "setup", None):
        raise ConfigError(
            f"launch.container: '{exe}' not found on PATH (from {launch.container!r}); install it, give its full "
            "path, or load it with launch.setup lines (e.g. 'module load apptainer')"
        )


def launch_preflight(recipe: Recipe, *, tokenizers: dict[str, Any] | None = None) -> None:
    """What `train` checks before its first step, run before anything is queued (train.preflight: recipe,
    shards and record kinds, tokenizer and model config, DeepSpeed config, batch vs. world size
    launch.nodes × launch.tasks_per_node, output_dir), plus the container command and the #SBATCH values.
    Reads configs only: seconds, no weights, no CUDA, nothing written. `tokenizers`: a cache by name."""
    from xlam_hpc.train.preflight import preflight

    launch = recipe.launch
    submitit_parameters(launch, recipe.output_dir, cluster=launch.cluster)  # control characters in #SBATCH values
    check_container(launch)
    cached = None if tokenizers is None else tokenizers.get(recipe.tokenizer)
    checked = preflight(recipe, launch.nodes * launch.tasks_per_node, tokenizer=cached)
    if tokenizers is not None:
        tokenizers[recipe.tokenizer] = checked.tokenizer


def make_executor(recipe: Recipe, cluster: str, folder: Path) -> Any:
    import submitit

    launch = recipe.launch
    if cluster == "slurm":
        for tool in ("sbatch", "srun", "squeue"):
            if shutil.which(tool) is None:
                raise ConfigError(
                    f"--cluster slurm: '{tool}' not found on PATH (not a Slurm login node?); "
                    "use --cluster local or run where Slurm is installed"
                )
    executor = submitit.AutoExecutor(
        folder=folder / "%j", cluster=cluster, **{f"{cluster}_python": python_command(launch)}
    )
    executor.update_parameters(**submitit_parameters(launch, recipe.output_dir, cluster=cluster))
    return executor


def _payload(recipe: Recipe, out: Path) -> TrainJob:
    (out / "launch").mkdir(parents=True, exist_ok=True)
    path = out / "launch" / "recipe.yaml"
    save_yaml(recipe.to_dict(), path)  # the job runs this file, never a pickled closure
    return TrainJob(str(path.resolve()), threads_per_rank=recipe.launch.cpus_per_task)


def _record(out: Path, job: Any, cluster: str, extra: dict[str, Any] | None = None) -> None:
    row = {
        "job_id": str(job.job_id),
        "cluster": cluster,
        "submitted": time.time(),
        "logs": str(Path(job.paths.folder)),
        **(extra or {}),
    }
    with (out / "launch" / "submissions.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def _submit_once(executor: Any, payload: TrainJob) -> Any:
    from submitit.core.utils import FailedJobError

    try:
        return executor.submit(payload)
    except FailedJobError as exc:  # sbatch refused (unknown partition, impossible resources): its own words
        raise ConfigError(f"sbatch refused the job:\n{str(exc).strip()}") from None


def _local_exit_code(out: Path, fingerprint: str) -> int:
    """What the ranks' exit status was, from the files they leave (local jobs report no codes)."""
    finished = out / "FINISHED"
    if finished.exists() and json.loads(finished.read_text()).get("fingerprint") == fingerprint:
        return 0
    if stop_path(out).exists():
        from xlam_hpc.train.signals import REQUEUE_EXIT_CODE

        return REQUEUE_EXIT_CODE
    return 1


def submit_run(recipe: Recipe, *, cluster: str, wait: bool, log: Any = print) -> list[Any]:
    """Submit; for local runs (or --wait) supervise until done. Returns the submitted submitit jobs."""
    out = Path(recipe.output_dir).resolve()
    recipe.output_dir = str(out)
    launch_preflight(recipe)  # before anything is written or queued
    _refuse_if_active(out)
    payload = _payload(recipe, out)
    executor = make_executor(recipe, cluster, out / "launch" / "submitit")
    job = _submit_once(executor, payload)
    _record(out, job, cluster)
    log(f"submitted {cluster} job {job.job_id}: output {out}, logs {job.paths.folder}")
    jobs = [job]
    if cluster == "local":
        jobs = _supervise_local(recipe, executor, payload, job, out=out, log=log)
    else:
        _warn_if_hopeless(str(job.job_id), log)
        if wait:
            from xlam_hpc.launch.status import wait_slurm

            wait_slurm([str(job.job_id)], out, log=log)
    return jobs


_HOPELESS = (
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "ReqNodeNotAvail",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxNodePerJobLimit",
    "AssocMaxNodesPerJobLimit",
)


def _warn_if_hopeless(job_id: str, log: Any) -> None:
    """sbatch accepts some requests that can never start (more nodes than the partition has): say so."""
    time.sleep(1.5)
    try:
        reason = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%r"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return
    if reason.startswith(_HOPELESS):
        log(
            f"WARNING: job {job_id} is pending with reason {reason}: the request exceeds what the partition "
            f"allows and may never start (scancel {job_id} and change launch.*)"
        )


def _follow_local(job: Any, log: Any, poll_s: float = 0.5) -> None:
    """Until the local job ends, pass on its rank-0 training log lines (`[restart R rank 0] ...`) as they
    are written, so `submit` shows the run instead of only "submitted ... done"."""
    path = Path(job.paths.folder) / f"{job.job_id}_0_log.err"
    position, partial = 0, ""
    while True:
        done = job.done()
        if path.exists():
            with path.open("r", encoding="utf-8", errors="replace") as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
            *lines, partial = (partial + chunk).split("\n")
            for line in lines:
                if line.startswith("[restart "):
                    log("   " + line)
        if done:
            if partial.startswith("[restart "):
                log("   " + partial)
            return
        time.sleep(poll_s)


def _supervise_local(recipe: Recipe, executor: Any, payload: TrainJob, job: Any, *, out: Path, log: Any) -> list[Any]:
    launch, jobs = recipe.launch, [job]
    while True:
        _follow_local(job, log)
        job.wait()
        code = _local_exit_code(out, recipe.fingerprint())
        d = decide(
            out,
            code,
            max_timeouts=launch.max_timeouts,
            max_preemptions=launch.max_preemptions,
            max_failures=launch.max_failures,
            job_id=str(job.job_id),
        )
        log(f"local job {job.job_id}: {d.line()}")
        if d.action != "requeue":
            if d.action == "stop":
                raise ConfigError(f"{out}: giving up after {d.reason} ({d.counts}); logs in {job.paths.folder}")
            return jobs
        job = _submit_once(executor, payload)
        _record(out, job, "local", {"restart": len(jobs)})
        jobs.append(job)
        log(f"resubmitted as local job {job.job_id} (same output_dir: it resumes from the last checkpoint)")


def dry_run(recipe: Recipe) -> str:
    """The sbatch script `submit --cluster slurm` would submit (quoted exactly as submitted), after the same
    preflight as `submit` (nothing is submitted or written)."""
    from xlam_hpc.launch.slurm import sbatch_script

    launch_preflight(recipe)
    return sbatch_script(recipe.launch, recipe.output_dir)
