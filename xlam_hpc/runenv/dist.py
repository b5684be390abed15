"""Rank/world detection for one process: torchrun, Slurm (srun), or a single process.

Slurm tasks get RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR (first host of the allocation) and MASTER_PORT
(derived from the job id, so it is stable across requeues and distinct between jobs) exported before
torch.distributed starts. Pure functions of the environment mapping, so they are tested without Slurm.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DistEnv", "detect", "export", "first_host", "master_port"]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str
    """'torchrun', 'slurm' or 'single'."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def master_port(job_id: str | int, base: int = 20000, span: int = 20000) -> int:
    """A port in [base, base+span) derived from the Slurm job id (array jobs: the array job id + task)."""
    digits = [int(x) for x in re.findall(r"\d+", str(job_id))] or [0]
    value = 0
    for d in digits:
        value = value * 1_000_003 + d
    return base + value % span


def first_host(nodelist: str) -> str:
    """First host of a Slurm nodelist ('n[1-3],m2' → 'n1'); `scontrol show hostnames` when available."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass  # inside a container without scontrol: parse the common forms ourselves
    head = re.split(r",(?![^\[]*\])", nodelist)[0]
    m = re.match(r"^([^\[]+)\[([^\]]+)\]", head)
    if not m:
        return head
    first = m.group(2).split(",")[0].split("-")[0]
    return m.group(1) + first


def detect(environ: Mapping[str, str] | None = None, *, port_base: int = 20000) -> DistEnv:
    """Rank and rendezvous of this process from its environment."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, or already exported by our Slurm wrapper
        return DistEnv(
            int(env["RANK"]),
            int(env["WORLD_SIZE"]),
            int(env.get("LOCAL_RANK", 0)),
            env.get("MASTER_ADDR", "127.0.0.1"),
            int(env.get("MASTER_PORT", 29500)),
            "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        job = env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "0"))
        job_key = f"{job}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
        nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        return DistEnv(
            int(env["SLURM_PROCID"]),
            int(env["SLURM_NTASKS"]),
            int(env.get("SLURM_LOCALID", 0)),
            env.get("MASTER_ADDR") or first_host(nodes),
            master_port(job_key, port_base),
            "slurm",
        )
    return DistEnv(0, 1, 0, "127.0.0.1", 29500, "single")


def export(dist: DistEnv) -> None:
    """Set the variables torch.distributed / DeepSpeed read (env:// rendezvous)."""
    os.environ.update(
        {
            "RANK": str(dist.rank),
            "WORLD_SIZE": str(dist.world_size),
            "LOCAL_RANK": str(dist.local_rank),
            "MASTER_ADDR": dist.master_addr,
            "MASTER_PORT": str(dist.master_port),
        }
    )
