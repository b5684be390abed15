"""Smoke tests for the local 2-node Slurm test cluster (``slurm/local-cluster.sh up``).

They check the cluster itself, below the launcher: a batch job runs and writes its output file,
and one srun step spans both nodes. See docs/slurm-test-cluster.md.

Without a reachable cluster the module is skipped, except under ``CI=true``, where CI is expected
to have run ``slurm/local-cluster.sh install && slurm/local-cluster.sh up`` and a missing cluster is an error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(60)]

NODES = ("n1", "n2")
PARTITION = "low"
# Each Slurm call gets well under the 30 s budget: sbatch --wait polls every ~2 s on this cluster.
CALL_TIMEOUT_S = 25
READY_STATES = {"idle", "mix", "alloc", "comp"}


def _slurm_env() -> dict[str, str]:
    """The client environment: $XLAM_SLURM_DIR's config if SLURM_CONF is not set already."""
    env = dict(os.environ)
    state_dir = env.get("XLAM_SLURM_DIR")
    if "SLURM_CONF" not in env and state_dir:
        env["SLURM_CONF"] = str(Path(state_dir) / "etc" / "slurm.conf")
    return env


def _cluster_problem() -> str | None:
    """Why the cluster cannot be used, or None when n1 and n2 are both up."""
    if shutil.which("sinfo") is None or shutil.which("scontrol") is None:
        return "`sinfo`/`scontrol` not found: run `slurm/local-cluster.sh install`"
    try:
        # `scontrol ping` answers at once when slurmctld is down; sinfo would retry for ~9 s.
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=15, env=_slurm_env(), check=False
        )
        if "is UP" not in ping.stdout:
            detail = (ping.stdout.splitlines() or [ping.stderr.strip()])[0]
            return f"slurmctld not reachable ({detail}): run `slurm/local-cluster.sh up`"
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"],
            capture_output=True,
            text=True,
            timeout=15,
            env=_slurm_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return f"`{exc.cmd[0]}` timed out after 15 s"
    if proc.returncode != 0:
        return f"`sinfo` failed ({proc.stderr.strip() or proc.returncode}): run `slurm/local-cluster.sh up`"
    states: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, _, state = line.partition(" ")
        states[name] = state.strip()
    bad = {n: states.get(n, "missing") for n in NODES if states.get(n) not in READY_STATES}
    if bad:
        return f"nodes not usable: {bad} (see `slurm/local-cluster.sh status` and docs/slurm-test-cluster.md)"
    return None


_IN_CI = os.environ.get("CI", "").strip().lower() == "true"
_PROBLEM = _cluster_problem()

if _PROBLEM is not None and not _IN_CI:
    pytest.skip(f"local Slurm cluster unavailable: {_PROBLEM}", allow_module_level=True)


def _require_cluster() -> None:
    """Under CI=true a missing cluster fails (FAILED, not ERROR or SKIPPED) each test that calls this.

    Every test in this module calls it first; a fixture would report an ERROR instead of a failure,
    and failing at import would abort the whole pytest session.
    """
    if _PROBLEM is not None:
        pytest.fail(
            f"CI=true but the local Slurm cluster is unavailable: {_PROBLEM}. "
            "CI must run `slurm/local-cluster.sh install && slurm/local-cluster.sh up` before pytest.",
            pytrace=False,
        )


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CALL_TIMEOUT_S, env=_slurm_env(), check=False)


def test_sbatch_wait_writes_output(tmp_path: Path) -> None:
    _require_cluster()
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
    _require_cluster()
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
