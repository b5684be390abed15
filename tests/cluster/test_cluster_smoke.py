"""Smoke tests for the local 2-node Slurm test cluster (``slurm/local-cluster.sh up``).

They check the cluster itself, below the launcher: a batch job runs and writes its output file,
and one srun step spans both nodes. See docs/slurm-test-cluster.md.

Without a reachable cluster the module is skipped, except under ``CI=true``, where CI is expected
to have run ``slurm/local-cluster.sh install && slurm/local-cluster.sh up`` and a missing cluster is an error.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.cluster.conftest import NODES, needs_cluster, require_cluster, slurm_env

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(60), needs_cluster]

PARTITION = "low"
# Each Slurm call gets well under the 30 s budget: sbatch --wait polls every ~2 s on this cluster.
CALL_TIMEOUT_S = 25


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CALL_TIMEOUT_S, env=slurm_env(), check=False)


def test_sbatch_wait_writes_output(tmp_path: Path) -> None:
    require_cluster()
    out = tmp_path / "job-%j.out"
    proc = _run(
        [
            "sbatch",
            "--wait",
            f"--partition={PARTITION}",
            "--time=1",
            "--job-name=xlam-smoke-sbatch",
            f"--output={out}",
            "--wrap",
            'echo "smoke job=$SLURM_JOB_ID node=$SLURMD_NODENAME"',
        ]
    )
    assert proc.returncode == 0, f"sbatch --wait failed: rc={proc.returncode}\n{proc.stdout}{proc.stderr}"
    match = re.search(r"Submitted batch job (\d+)", proc.stdout)
    assert match, f"no job id in sbatch output: {proc.stdout!r}"
    job_id = match.group(1)
    out_file = tmp_path / f"job-{job_id}.out"
    assert out_file.is_file(), f"job {job_id} wrote no output file; tmp_path has {list(tmp_path.iterdir())}"
    text = out_file.read_text()
    assert re.fullmatch(rf"smoke job={job_id} node=(n1|n2)\n", text), text


def test_srun_spans_two_nodes() -> None:
    require_cluster()
    proc = _run(
        [
            "srun",
            f"--partition={PARTITION}",
            "--time=1",
            "--job-name=xlam-smoke-srun",
            "--nodes=2",
            "--ntasks=2",
            "--ntasks-per-node=1",
            "sh",
            "-c",
            'echo "$SLURM_PROCID $SLURMD_NODENAME"',
        ]
    )
    assert proc.returncode == 0, f"srun failed: rc={proc.returncode}\n{proc.stdout}{proc.stderr}"
    rows = sorted(line.split() for line in proc.stdout.splitlines() if line.strip())
    assert [rank for rank, _ in rows] == ["0", "1"], proc.stdout
    # hostname is the same on both "nodes" here; SLURMD_NODENAME tells them apart.
    assert {node for _, node in rows} == set(NODES), proc.stdout
