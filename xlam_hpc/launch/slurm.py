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
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.launch.config import LaunchConfig

__all__ = [
    "batch_setup",
    "check_output_dir",
    "check_sbatch_value",
    "python_command",
    "requeue_teardown",
    "sbatch_script",
    "submit_folder",
    "submitit_parameters",
]

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


def check_output_dir(output_dir: str) -> str:
    """`output_dir` as it goes into the batch script. Spaces, quotes, `;`, `$(...)` are fine: every use is
    shell-quoted (submitit quotes the folder on its srun line and in the #SBATCH lines, which sbatch reads with
    shell-style quoting and never runs). Refused before anything is queued: control characters (a newline
    would start a shell line) and `%` (sbatch expands %j, %t, ... in the log paths under output_dir)."""
    text = str(output_dir)
    if _BAD.search(text):
        raise ConfigError(f"output_dir contains a control character (newline, tab...): {text!r}")
    if "%" in text:
        raise ConfigError(
            f"output_dir {text!r} contains '%': sbatch would expand it (%j, %t, ...) in the job's log paths; "
            "use another directory name"
        )
    return text


def _job_key() -> str:
    """This job as scontrol/squeue name it: an array task by its array name (ARRAYID_TASK)."""
    return (
        'xlam_job="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"; '
        'xlam_job="${xlam_job:-$SLURM_JOB_ID}"'
    )


def _budget_args(launch: LaunchConfig) -> list[str]:
    return [
        "--max-timeouts",
        str(launch.max_timeouts),
        "--max-preemptions",
        str(launch.max_preemptions),
        "--max-failures",
        str(launch.max_failures),
    ]


def _python_on_out(launch: LaunchConfig, before: list[str], after: list[str]) -> str:
    """`python ... BEFORE "$xlam_out" AFTER`: the output_dir from the batch shell's variable (set in batch_setup)."""
    return f'{shlex.join([*shlex.split(python_command(launch)), *before])} "$xlam_out" {shlex.join(after)}'


def _array_task_dir(output_dir: str) -> list[str]:
    """A sweep is one array submitted with task 0's output_dir (SWEEP/task-0000, launch/sweep.py): array task i
    works in SWEEP/task-000i, so its start, decision and TERM note go there, not to task 0's ledger."""
    if Path(output_dir).name != "task-0000":
        return []
    return [
        '[[ -n ${SLURM_ARRAY_TASK_ID:-} ]] && xlam_out="${xlam_out%/*}/task-$(printf %04d "$SLURM_ARRAY_TASK_ID")"',
    ]


def batch_setup(launch: LaunchConfig, output_dir: str) -> list[str]:
    """Bash lines before srun: the user's launch.setup, then what lets the batch shell survive a SIGTERM and
    count this start in the requeue ledger.

    srun answers a SIGTERM of its own by SIGKILLing every rank ("srun: forcing job termination"), and a batch
    shell without a trap dies of it before deciding anything (the job ends FAILED). `scancel --signal=TERM
    --full` (and some sites' drains) sends TERM to the batch shell, srun and the ranks at once. So: the shell
    traps TERM, notes it in OUTPUT_DIR/launch/batch_signal, passes it to the step's ranks (scancel --signal=TERM
    of the steps, never a kill of srun), and waits for srun to end; then the teardown decides and requeues.
    srun itself runs in the background (a shell function named `srun` wraps the line submitit writes), because
    bash runs a trap only once its foreground command ends.
    """
    out = shlex.quote(check_output_dir(output_dir))
    start = _python_on_out(launch, ["-m", "xlam_hpc.launch.requeue", "start"], _budget_args(launch))
    lines = []
    for line in launch.setup:
        if _BAD.search(line):
            raise ConfigError(f"launch.setup line contains a control character (newline, tab...): {line!r}")
        lines.append(line)
    return [
        *lines,
        "# xlam-hpc: survive a SIGTERM to the whole job (pass it to the ranks, wait, decide), count this start",
        f"xlam_out={out}",
        *_array_task_dir(output_dir),
        _job_key(),
        "xlam_on_term() {",
        '    echo "xlam-hpc: [$(date +%T)] batch shell got SIGTERM: passing it to the ranks, waiting for them" >&2',
        '    date +%s >"$xlam_out/launch/batch_signal" 2>/dev/null',
        '    scancel --signal=TERM "$xlam_job" 2>/dev/null',
        "}",
        "trap xlam_on_term TERM",
        "srun() {",
        '    command srun "$@" &',
        "    local pid=$! rc r",
        '    wait "$pid"; rc=$?',
        "    # a trapped signal ends `wait` early (> 128): wait while srun runs; the last wait gives its status",
        '    while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done',
        '    wait "$pid" 2>/dev/null; r=$?; [[ $r == 127 ]] || rc=$r',
        '    return "$rc"',
        "}",
        f"xlam_start=$({start})",
        'echo "xlam-hpc: job $xlam_job restart ${SLURM_RESTART_COUNT:-0}: ${xlam_start:-start not counted}"',
        'case "$xlam_start" in stop*) echo "xlam-hpc: a requeue budget is used up ($xlam_start): not starting" >&2; '
        "exit 1 ;; esac",
    ]


def requeue_teardown(launch: LaunchConfig, output_dir: str) -> list[str]:
    """Bash lines after srun: decide (budgets), then requeue from the host if asked to."""
    check_output_dir(output_dir)
    decide = _python_on_out(launch, ["-m", "xlam_hpc", "requeue-decision"], _budget_args(launch))
    return [
        "rc=$?",
        f'decision=$({decide} --exit-code "$rc")',
        'echo "xlam-hpc: step exited with $rc -> $decision (restart ${SLURM_RESTART_COUNT:-0})"',
        # an array task by its array name: `scontrol requeue <array job id>` requeues every task of the array,
        # and one task's own SLURM_JOB_ID is that id (the task started last)
        _job_key(),
        'case "$decision" in requeue*) sleep 2; scontrol requeue "$xlam_job" || '
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
    check_output_dir(output_dir)
    if cluster == "local":
        return params
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        value = getattr(launch, key)
        if value:
            params[f"slurm_{key}"] = check_sbatch_value(key, value)
    extra: dict[str, Any] = {"requeue": True}
    for key, value in launch.extra_sbatch.items():
        if not _KEY.match(key):
            raise ConfigError(f"launch.extra_sbatch key {key!r} is not an sbatch option name")
        extra[key] = check_sbatch_value(key, value)
    params.update(
        slurm_additional_parameters=extra,
        slurm_signal_delay_s=launch.signal_before_limit_s,  # --signal=USR2@N to the tasks: save before the limit
        slurm_srun_args=["--kill-on-bad-exit=1"],  # one dead rank stops the step at once (then: failure budget)
        slurm_setup=batch_setup(launch, output_dir),
        slurm_teardown=requeue_teardown(launch, output_dir),
        slurm_wckey=None,  # submitit would force `#SBATCH --wckey=submitit` (sites that check wckeys refuse it)
    )
    return params


def submit_folder(output_dir: str) -> str:
    """submitit's job folder under output_dir (the %j is submitit's: one folder per job id)."""
    return f"{check_output_dir(output_dir)}/launch/submitit/%j"


def sbatch_script(launch: LaunchConfig, output_dir: str) -> str:
    """The batch script `submit --cluster slurm` submits, rendered as submitit renders it (its srun line
    quotes the folder: SlurmExecutor._submitit_command_str), for `--dry-run` and tests."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit has no public renderer (pinned 1.5.4)

    params = submitit_parameters(launch, output_dir, cluster="slurm")
    names = {"name": "job_name", "tasks_per_node": "ntasks_per_node", "timeout_min": "time"}
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith("slurm_"):
            kwargs[key[len("slurm_") :]] = value
        elif key == "mem_gb":
            kwargs["mem"] = f"{value}GB"
        else:
            kwargs[names.get(key, key)] = value
    folder = submit_folder(output_dir)
    command = " ".join([python_command(launch), "-u -m submitit.core._submit", shlex.quote(folder)])
    return _make_sbatch_string(command=command, folder=folder, **kwargs)
