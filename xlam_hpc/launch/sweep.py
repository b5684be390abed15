"""`xlam-hpc sweep RECIPE --grid lr=1e-5,2e-5 train.lora.r=8,16`: one Slurm array over a grid.

Task i of the cartesian product gets its own output_dir (SWEEP/task-000i) and a seed derived from
(base seed, i) with SeedSequence, so a requeued task keeps its seed. The sweep directory holds
sweep.json (the manifest) and, once tasks finish, summary.csv / summary.md of their final metrics.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from xlam_hpc.config import parse_override
from xlam_hpc.errors import ConfigError
from xlam_hpc.launch.status import status_report
from xlam_hpc.recipe import Recipe, load_recipe

__all__ = ["expand_grid", "parse_grid", "submit_sweep", "summarize", "task_seed"]


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """['lr=1e-5,2e-5', 'train.lora.r=8,16'] → {'lr': [1e-5, 2e-5], 'train.lora.r': [8, 16]}."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise ConfigError(f"--grid '{spec}' is not of the form key=v1,v2,...")
        values = [parse_override(f"{key}={part}")[1] for part in raw.split(",") if part.strip()]
        if not values:
            raise ConfigError(f"--grid '{spec}' has no values")
        grid[key.strip()] = values
    return grid


def _alias(key: str) -> str:
    # the common short names people type in a sweep
    return {"lr": "train.lr", "steps": "train.max_steps", "lora.r": "train.lora.r"}.get(key, key)


def task_seed(base_seed: int, index: int) -> int:
    """Seed of sweep task `index`: independent streams from one base seed, stable across requeues."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, dtype=np.uint32)[0])


def expand_grid(
    recipe_path: str | None,
    overrides: list[str],
    grid: dict[str, list[Any]],
    sweep_dir: Path,
    base: dict[str, Any] | None = None,
) -> list[tuple[dict[str, Any], Recipe]]:
    """Validated task recipes of the grid: [(assignment, recipe)]; unknown keys fail before submission."""
    if not grid:
        raise ConfigError("a sweep needs at least one --grid key=values")
    keys = [_alias(k) for k in grid]
    points = list(itertools.product(*grid.values()))
    if not points:
        raise ConfigError("the grid has 0 points")
    base_recipe = load_recipe(recipe_path, overrides, base=base)
    tasks = []
    for i, values in enumerate(points):
        assignment = dict(zip(keys, values, strict=True))
        task_overrides = [
            *overrides,
            *(f"{k}={json.dumps(v)}" for k, v in assignment.items()),
            f"output_dir={sweep_dir / f'task-{i:04d}'}",
            f"seed={task_seed(base_recipe.seed, i)}",
        ]
        tasks.append((assignment, load_recipe(recipe_path, task_overrides, base=base)))
    return tasks


def submit_sweep(
    tasks: list[tuple[dict[str, Any], Recipe]],
    sweep_dir: Path,
    *,
    cluster: str,
    max_parallel: int | None,
    log: Any = print,
) -> list[Any]:
    """All tasks as one array job (submitit batch); writes sweep.json."""
    from xlam_hpc.launch.submit import _payload, make_executor

    sweep_dir.mkdir(parents=True, exist_ok=True)
    executor = make_executor(tasks[0][1], cluster, sweep_dir / "submitit")
    if max_parallel and cluster == "slurm":
        executor.update_parameters(slurm_array_parallelism=max_parallel)
    payloads = [_payload(recipe, Path(recipe.output_dir)) for _, recipe in tasks]
    with executor.batch():
        jobs = [executor.submit(p) for p in payloads]
    manifest = {
        "cluster": cluster,
        "array_job_id": str(jobs[0].job_id).split("_")[0],
        "tasks": [
            {"index": i, "assignment": a, "seed": r.seed, "output_dir": r.output_dir, "job_id": str(j.job_id)}
            for i, ((a, r), j) in enumerate(zip(tasks, jobs, strict=True))
        ],
    }
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for (_, recipe), job in zip(tasks, jobs, strict=True):
        out = Path(recipe.output_dir)
        with (out / "launch" / "submissions.jsonl").open("a") as f:
            f.write(json.dumps({"job_id": str(job.job_id), "cluster": cluster, "logs": str(job.paths.folder)}) + "\n")
    log(f"submitted sweep of {len(jobs)} tasks as {cluster} array {manifest['array_job_id']}: {sweep_dir}")
    return jobs


def summarize(sweep_dir: str | Path) -> tuple[str, str]:
    """Write summary.csv and summary.md (one row per task: its grid values, state, final metrics)."""
    d = Path(sweep_dir)
    manifest = json.loads((d / "sweep.json").read_text())
    statuses = {s["task"]: s for s in status_report(d)}
    keys = list(manifest["tasks"][0]["assignment"])
    header = ["task", *keys, "seed", "state", "step", "final_loss", "loss_last10_mean", "tokens_per_s", "output_dir"]
    rows = []
    for t in manifest["tasks"]:
        out = Path(t["output_dir"])
        metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
        rows.append(
            [
                t["index"],
                *(t["assignment"][k] for k in keys),
                t["seed"],
                statuses[t["index"]]["state"],
                metrics.get("step"),
                _fmt(metrics.get("final_loss")),
                _fmt(metrics.get("loss_last10_mean")),
                _fmt(metrics.get("tokens_per_s_mean"), 0),
                t["output_dir"],
            ]
        )
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    (d / "summary.csv").write_text(buf.getvalue())
    (d / "summary.md").write_text("\n".join(md) + "\n")
    return buf.getvalue(), "\n".join(md)


def _fmt(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value
