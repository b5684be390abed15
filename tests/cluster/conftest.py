"""Helpers shared by the real-cluster tests: is the cluster up, and a stand-in container."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXTENSIONS = os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


NODES = ("n1", "n2")
READY_STATES = {"idle", "mix", "alloc", "comp"}
IN_CI = os.environ.get("CI", "").strip().lower() == "true"


def slurm_env() -> dict[str, str]:
    """The client environment: $XLAM_SLURM_DIR's config if SLURM_CONF is not set already."""
    env = dict(os.environ)
    state_dir = env.get("XLAM_SLURM_DIR")
    if "SLURM_CONF" not in env and state_dir:
        env["SLURM_CONF"] = str(Path(state_dir) / "etc" / "slurm.conf")
    return env


@functools.cache
def cluster_problem() -> str | None:
    """Why the cluster cannot be used, or None when n1 and n2 are both up."""
    if shutil.which("sinfo") is None or shutil.which("scontrol") is None or shutil.which("sbatch") is None:
        return "`sinfo`/`scontrol`/`sbatch` not found: run `slurm/local-cluster.sh install`"
    try:
        # `scontrol ping` answers at once when slurmctld is down; sinfo would retry for ~9 s.
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=15, env=slurm_env(), check=False
        )
        if "is UP" not in ping.stdout:
            detail = (ping.stdout.splitlines() or [ping.stderr.strip()])[0]
            return f"slurmctld not reachable ({detail}): run `slurm/local-cluster.sh up`"
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"],
            capture_output=True,
            text=True,
            timeout=15,
            env=slurm_env(),
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


# Cluster tests skip before their fixtures build anything when the cluster is down, except under CI=true:
# there they run and fail in require_cluster (FAILED, not ERROR as a failing fixture would report).
needs_cluster = pytest.mark.skipif(
    not IN_CI and cluster_problem() is not None, reason=f"local Slurm cluster unavailable: {cluster_problem()}"
)


def require_cluster() -> None:
    """Fail the calling test when the cluster is unavailable (under CI=true it must be up)."""
    problem = cluster_problem()
    if problem is not None:
        pytest.fail(
            f"CI=true but the local Slurm cluster is unavailable: {problem}. "
            "CI must run `slurm/local-cluster.sh install && slurm/local-cluster.sh up` before pytest.",
            pytrace=False,
        )


def cleanenv_container(tmp_path: Path) -> tuple[str, Path]:
    """A stand-in for `apptainer exec --nv --cleanenv -B ... IMAGE`: the command runs with none of the
    host environment except what apptainer --cleanenv lets in (TERM, proxies; APPTAINERENV_X as X) and
    the "image's" own PATH. It records the node and rank each process was started for."""
    trace = tmp_path / "container.log"
    shim = tmp_path / "fake-apptainer"
    shim.write_text(
        f"""#!/bin/bash
set -euo pipefail
[[ $1 == exec ]] && shift
while [[ $1 == -* ]]; do case $1 in -B | --bind | --env) shift 2 ;; *) shift ;; esac; done
shift # the image
echo "node=${{SLURMD_NODENAME:-?}} procid=${{APPTAINERENV_SLURM_PROCID:-none}} cmd=$1 ${{2:-}}" >>{trace}
pass=(); for v in ${{!APPTAINERENV_@}}; do pass+=("${{v#APPTAINERENV_}}=${{!v}}"); done
exec env -i HOME="$HOME" TERM="${{TERM:-dumb}}" PATH="{Path(sys.executable).parent}:/usr/bin:/bin" \\
    TORCH_EXTENSIONS_DIR="{EXTENSIONS}" "${{pass[@]}}" "$@"
"""
    )
    shim.chmod(0o755)
    return f"{shim} exec --nv --cleanenv -B /scratch,/data {tmp_path}/xlam-hpc.sif", trace
