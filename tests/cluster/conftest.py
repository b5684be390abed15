"""Helpers shared by the real-cluster tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXTENSIONS = os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


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
