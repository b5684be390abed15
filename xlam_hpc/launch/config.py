"""LaunchConfig: recipe section `launch:` (where and how the job runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["LaunchConfig"]


@dataclass(kw_only=True)
class LaunchConfig:
    """Recipe section `launch:`; `xlam-hpc submit --cluster` overrides `cluster`."""

    cluster: Literal["local", "slurm"] = "local"
    nodes: int = 1
    tasks_per_node: int = 1
    """Ranks per node (one per GPU)."""
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int | None = None
    time_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    job_name: str = "xlam-hpc"
    extra_sbatch: dict[str, str] = field(default_factory=dict)
    """More `#SBATCH --key=value` lines (values are quoted)."""
    setup: list[str] = field(default_factory=list)
    """Shell lines the batch script runs before the ranks start, e.g. ['module load apptainer'] (Slurm only)."""
    container: str = ""
    """Command prefix inside the job, e.g. 'apptainer exec --nv --cleanenv -B /scratch xlam-hpc.sif'."""
    signal_before_limit_s: int = 120
    """Send SIGUSR1 this long before the time limit (checkpoint and requeue)."""
    max_timeouts: int = 10
    """Time-limit requeues over the run's whole life (each one saves a checkpoint): at least run time / time limit."""
    max_preemptions: int = 10
    """Preemption requeues in a row without a new checkpoint."""
    max_failures: int = 2
    """Failures (a crash, a dead rank) in a row without a new checkpoint; a newer checkpoint resets the count."""
    master_port_base: int = 20000

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.tasks_per_node < 1:
            raise ValueError("launch.nodes and launch.tasks_per_node must be >= 1")
        if isinstance(self.setup, str):
            self.setup = [self.setup]
        if not isinstance(self.setup, list) or not all(isinstance(x, str) for x in self.setup):
            raise ValueError("launch.setup must be a list of shell lines (strings)")
