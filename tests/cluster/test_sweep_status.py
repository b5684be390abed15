"""`xlam-hpc sweep ... --cluster slurm --wait` and `xlam-hpc status SWEEP_DIR` on the 2-node test cluster.

A 2x2 grid (learning rate x LoRA rank) of the tiny model runs as one Slurm array, at most 2 tasks at
once; every task ends with its own output_dir, FINISHED marker and metrics, all with the recipe's seed (only
the grid varies), and the summary tables and `status` list the 4 tasks.

Skipped when the cluster is down, except under CI=true (as in test_cluster_smoke.py).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import needs_cluster, require_cluster
from tests.integration.conftest import write_recipe

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(400), needs_cluster]
BASE_SEED = 11
GRID = [("train.lr", [1e-3, 2e-3]), ("train.lora.r", [4, 8])]


def _running(array_job: str) -> int:
    out = subprocess.run(
        ["squeue", "-h", "-t", "running", "-j", array_job, "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return len(out.split())


def test_lora_grid_sweep_as_one_array_then_status(train_data, tmp_path):
    require_cluster()
    sweep = tmp_path / "sweep"
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        train_data["sft"],
        seed=BASE_SEED,
        output_dir=str(sweep),
        data={"global_batch_size": 2},
        train={"max_steps": 3, "save_interval": 100, "warmup_steps": 0, "lora": {"r": 16, "alpha": 16}},
        launch={"partition": "low", "cpus_per_task": 1, "time_min": 10},
    )
    cmd = [sys.executable, "-m", "xlam_hpc", "sweep", str(recipe), "--grid", "lr=1e-3,2e-3", "train.lora.r=4,8"]
    proc = subprocess.Popen(
        [*cmd, "--max-parallel", "2", "--cluster", "slurm", "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    # While it waits: never more than 2 tasks running at once.
    most_running, deadline = 0, time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        manifest = sweep / "sweep.json"
        if manifest.exists():
            most_running = max(most_running, _running(json.loads(manifest.read_text())["array_job_id"]))
        time.sleep(1)
    if proc.poll() is None:
        proc.kill()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout + stderr

    m = re.search(r"submitted sweep of 4 tasks as slurm array (\d+): ", stderr)
    assert m, stderr
    array_job = m.group(1)
    assert 1 <= most_running <= 2, f"--max-parallel 2 but {most_running} tasks seen running at once"
    script = next((sweep / "submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%2" in script, script

    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["cluster"] == "slurm" and manifest["array_job_id"] == array_job
    points = [{"train.lr": lr, "train.lora.r": r} for lr in GRID[0][1] for r in GRID[1][1]]
    assert [t["assignment"] for t in manifest["tasks"]] == points
    assert [t["index"] for t in manifest["tasks"]] == [0, 1, 2, 3]
    assert [t["job_id"] for t in manifest["tasks"]] == [f"{array_job}_{i}" for i in range(4)]
    seeds = [t["seed"] for t in manifest["tasks"]]
    assert seeds == [BASE_SEED] * 4  # the tasks share the recipe's seed: only the grid varies (issue 13)

    for i, task in enumerate(manifest["tasks"]):
        out = Path(task["output_dir"])
        assert out == sweep / f"task-{i:04d}"
        assert (out / "FINISHED").exists(), f"task {i} did not finish; logs in {sweep / 'submitit'}"
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["step"] == 3 and metrics["final_loss"] is not None
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert config["seed"] == seeds[i]
        assert (config["train"]["lr"], config["train"]["lora"]["r"]) == tuple(points[i].values())

    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert len(rows) == 4
    for i, row in enumerate(rows):
        assert (float(row["train.lr"]), int(row["train.lora.r"])) == tuple(points[i].values())
        assert (int(row["task"]), int(row["seed"]), row["state"], row["step"]) == (i, seeds[i], "COMPLETED", "3")
    md = (sweep / "summary.md").read_text().splitlines()
    assert md[0].startswith("| task | train.lr | train.lora.r | seed | state |") and len(md) == 2 + 4
    assert stdout.strip().splitlines() == md  # --wait prints the table

    status = subprocess.run(
        [sys.executable, "-m", "xlam_hpc", "status", str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    lines = [x for x in status.stdout.splitlines() if x.startswith("task")]
    assert len(lines) == 4, status.stdout
    for i, line in enumerate(lines):
        assert re.match(rf"task +{i} COMPLETED +job {array_job}_{i} restarts 0 ", line), line
        assert "checkpoint 3 " in line and str(sweep / f"task-{i:04d}") in line, line
