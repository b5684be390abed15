"""LaunchConfig → submitit parameters, with the host-side requeue teardown and safe sbatch values.

Everything that ends up in the generated batch script is either an #SBATCH value (shell-quoted by
submitit, checked here for control characters: a newline would start a new shell line) or shell-quoted
here. The teardown runs on the host after
`srun` returns: it asks `xlam-hpc requeue-decision` (through the container prefix, so the host needs no
Python packages) what to do and calls `scontrol requeue` itself — scontrol is often missing inside
containers, and a job that exits during GraceTime is not requeued by Slurm.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.launch.config import LaunchConfig

__all__ = ["check_sbatch_value", "python_command", "requeue_teardown", "submitit_parameters"]

_BAD = re.compile(r"[\x00-\x1f\x7f]")
_KEY = re.compile(r"^[a-z][a-z0-9-]*$")


def check_sbatch_value(key: str, value: Any) -> str:
    """`value` checked for an `#SBATCH --key=value` line. submitit shell-quotes it there (sbatch reads those
    lines with shell-style quoting and never runs them), but a quoted newline would still end the comment
    line and start a real shell line, so control characters are refused."""
    text = str(value)
    if _BAD.search(text):
        raise ConfigError(f"launch value for '{key}' contains a control character (newline, tab...): {text!r}")
    return text


# `apptainer exec --cleanenv` keeps only a few variables: the task's SLURM_* (rank, world size, nodes),
# SUBMITIT_*, NCCL_* and CUDA_VISIBLE_DEVICES must be handed in as APPTAINERENV_* / SINGULARITYENV_*.
# Runs per task (srun sets them), before the container starts; a no-op for containers that keep the env.
ENV_PASSTHROUGH = (
    "for v in ${!SLURM_@} ${!SUBMITIT_@} ${!NCCL_@} CUDA_VISIBLE_DEVICES; do if [[ -v $v ]]; then "
    'export "APPTAINERENV_$v=${!v}" "SINGULARITYENV_$v=${!v}"; fi; done; exec "$@"'
)


def python_command(launch: LaunchConfig) -> str:
    """The interpreter every task runs, behind the container prefix (e.g. apptainer exec --nv img.sif)."""
    if not launch.container:
        return shlex.quote(_sys_python())
    return shlex.join(["bash", "-c", ENV_PASSTHROUGH, "rank", *shlex.split(launch.container), "python3"])


def _sys_python() -> str:
    import sys

    return sys.executable


def requeue_teardown(launch: LaunchConfig, output_dir: str) -> list[str]:
    """Bash lines after srun: decide (budgets), then requeue from the host if asked to."""
    decide = shlex.join(
        [
            *shlex.split(python_command(launch)),
            "-m",
            "xlam_hpc",
            "requeue-decision",
            output_dir,
            "--max-timeouts",
            str(launch.max_timeouts),
            "--max-preemptions",
            str(launch.max_preemptions),
            "--max-failures",
            str(launch.max_failures),
        ]
    )
    return [
        "rc=$?",
        f'decision=$({decide} --exit-code "$rc")',
        'echo "xlam-hpc: step exited with $rc -> $decision (restart ${SLURM_RESTART_COUNT:-0})"',
        # an array task by its array name: `scontrol requeue <array job id>` requeues every task of the array,
        # and one task's own SLURM_JOB_ID is that id (the task started last)
        'job="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"',
        'case "$decision" in requeue*) sleep 2; scontrol requeue "${job:-$SLURM_JOB_ID}" || '
        'echo "xlam-hpc: scontrol requeue failed; resubmit with the same output_dir" >&2 ;; esac',
        'case "$decision" in done*) exit 0 ;; *) exit "$rc" ;; esac',
    ]


def submitit_parameters(launch: LaunchConfig, output_dir: str, *, cluster: str) -> dict[str, Any]:
    """Parameters for submitit's AutoExecutor.update_parameters."""
    params: dict[str, Any] = {
        "name": check_sbatch_value("job_name", launch.job_name),
        "nodes": launch.nodes,
        "tasks_per_node": launch.tasks_per_node,
        "cpus_per_task": launch.cpus_per_task,
        "timeout_min": launch.time_min,
    }
    if launch.gpus_per_node:
        params["gpus_per_node"] = launch.gpus_per_node
    if launch.mem_gb:
        params["mem_gb"] = launch.mem_gb
    if cluster == "local":
        return params
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        value = getattr(launch, key)
        if value:
            params[f"slurm_{key}"] = check_sbatch_value(key, value)
    extra = {"requeue": True}
    for key, value in launch.extra_sbatch.items():
        if not _KEY.match(key):
            raise ConfigError(f"launch.extra_sbatch key {key!r} is not an sbatch option name")
        extra[key] = check_sbatch_value(key, value)
    params.update(
        slurm_additional_parameters=extra,
        slurm_signal_delay_s=launch.signal_before_limit_s,  # --signal=USR2@N to the tasks: save before the limit
        slurm_srun_args=["--kill-on-bad-exit=1"],  # one dead rank stops the step at once (then: failure budget)
        slurm_teardown=requeue_teardown(launch, output_dir),
    )
    return params
