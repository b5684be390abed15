"""TrainJob: what submitit pickles and runs in every task. It carries a path, not a closure.

The payload is the resolved recipe file written at submission (submitit's own tips warn that editing a
module between submission and start changes what a pickled closure runs). In each task it turns
submitit's JobEnvironment into RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT, runs the trainer,
and ends the task with the trainer's exit code: 75 tells the batch script's teardown (or the local
supervisor) "checkpointed, requeue me".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TrainJob"]


@dataclass(frozen=True)
class TrainJob:
    recipe_path: str
    threads_per_rank: int = 0
    """OMP/torch threads per rank (cpus_per_task); 0 leaves the environment alone."""

    def __call__(self) -> dict[str, Any]:
        import submitit

        from xlam_hpc.recipe import load_recipe
        from xlam_hpc.runenv.dist import DistEnv, export, first_host, master_port

        env = submitit.JobEnvironment()
        recipe = load_recipe(self.recipe_path)
        if env.cluster == "slurm":
            nodes = os.environ.get("SLURM_JOB_NODELIST", "")
            addr = first_host(nodes) if nodes else env.hostnames[0]
        else:
            addr = "127.0.0.1"
        export(
            DistEnv(
                env.global_rank,
                env.num_tasks,
                env.local_rank,
                addr,
                master_port(env.job_id, recipe.launch.master_port_base),
                env.cluster,
            )
        )
        if self.threads_per_rank:
            os.environ["OMP_NUM_THREADS"] = str(self.threads_per_rank)
            import torch

            torch.set_num_threads(self.threads_per_rank)
        from xlam_hpc.train.loop import run_training

        code = run_training(recipe)
        if code != 0:
            raise SystemExit(code)  # submitit re-raises only Exceptions; this becomes the task's exit status
        metrics = Path(recipe.output_dir) / "metrics.json"
        return json.loads(metrics.read_text()) if metrics.exists() else {}
