"""`xlam-hpc sweep RECIPE --grid lr=1e-5,2e-5 --grid train.lora.r=8,16`: one Slurm array over a grid.

Task i of the cartesian product gets its own output_dir (SWEEP/task-000i). Every task has the recipe's
seed — the same data order and initial weights, so only the grid varies — unless `--seeds K` asks for K
replicates of every point (seeds seed, seed+1, ..., seed+K-1). Before anything is submitted every task
passes the trainer's preflight (launch.preflight). The sweep directory holds sweep.json (the manifest) and,
once tasks finish, summary.csv / summary.md of their final metrics.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any

from xlam_hpc.config import parse_override
from xlam_hpc.errors import ConfigError, XlamError
from xlam_hpc.launch.status import status_report
from xlam_hpc.recipe import Recipe, load_recipe

__all__ = ["expand_grid", "parse_grid", "preflight_sweep", "submit_sweep", "summarize", "task_seed"]


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """['lr=1e-5,2e-5', 'train.lora.r=8,16'] → {'lr': [1e-5, 2e-5], 'train.lora.r': [8, 16]}. The specs of
    repeated --grid flags arrive as one list; a key given twice is an error (not a silent last-one-wins)."""
    grid: dict[str, list[Any]] = {}
    seen: dict[str, str] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise ConfigError(f"--grid '{spec}' is not of the form key=v1,v2,...")
        values = [parse_override(f"{key}={part}")[1] for part in raw.split(",") if part.strip()]
        if not values:
            raise ConfigError(f"--grid '{spec}' has no values")
        name = _alias(key.strip())
        if name in seen:
            raise ConfigError(f"--grid gives {name} twice ('{seen[name]}' and '{spec}'); list its values once")
        seen[name] = spec
        grid[key.strip()] = values
    return grid


def _alias(key: str) -> str:
    # the common short names people type in a sweep
    return {"lr": "train.lr", "steps": "train.max_steps", "lora.r": "train.lora.r"}.get(key, key)


def task_seed(base_seed: int, index: int) -> int:
    """An independent seed per index from one base seed, stable across requeues (SeedSequence). CLI sweeps no
    longer use it (their tasks share the recipe's seed, `--seeds K` adds seed+j replicates); kept for the
    slurm/sweep-array.sbatch template, which derives its per-task seeds with it."""
    import numpy as np

    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, dtype=np.uint32)[0])


def expand_grid(
    recipe_path: str | None,
    overrides: list[str],
    grid: dict[str, list[Any]],
    sweep_dir: Path,
    base: dict[str, Any] | None = None,
    *,
    seeds: int = 1,
) -> list[tuple[dict[str, Any], Recipe]]:
    """Validated task recipes of the grid × `seeds` replicates: [(assignment, recipe)]; unknown keys fail before
    submission. Replicate j of a point has seed `seed + j` (the recipe's seed for j = 0)."""
    if not grid:
        raise ConfigError("a sweep needs at least one --grid key=values")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    keys = [_alias(k) for k in grid]
    if "seed" in keys and seeds > 1:
        raise ConfigError("--grid seed=... and --seeds K both set the seed; use one of them")
    points = list(itertools.product(*grid.values()))
    if not points:
        raise ConfigError("the grid has 0 points")
    base_recipe = load_recipe(recipe_path, overrides, base=base)
    tasks = []
    for values in points:
        assignment = dict(zip(keys, values, strict=True))
        for j in range(seeds):
            i = len(tasks)
            task_overrides = [
                *overrides,
                *(f"{k}={json.dumps(v)}" for k, v in assignment.items()),
                f"output_dir={sweep_dir / f'task-{i:04d}'}",
            ]
            if "seed" not in assignment:
                task_overrides.append(f"seed={base_recipe.seed + j}")
            tasks.append((assignment, load_recipe(recipe_path, task_overrides, base=base)))
    return tasks


def preflight_sweep(tasks: list[tuple[dict[str, Any], Recipe]]) -> None:
    """The trainer's preflight for every task (a grid value can break one task only: a batch size, a DeepSpeed
    file); ConfigError naming the task. The tokenizer is loaded once per distinct tokenizer."""
    from xlam_hpc.launch.submit import launch_preflight

    tokenizers: dict[str, Any] = {}
    for i, (assignment, recipe) in enumerate(tasks):
        try:
            launch_preflight(recipe, tokenizers=tokenizers)
        except XlamError as exc:  # also ShardError, ResumeError
            values = " ".join(f"{k}={v}" for k, v in assignment.items())
            raise type(exc)(f"sweep task-{i:04d} ({values}, seed={recipe.seed}): {exc}") from None


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

    preflight_sweep(tasks)
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
