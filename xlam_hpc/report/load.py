"""Read what a run directory holds into one RunData: history, config, metrics, ledger, eval results.

Every piece is optional (a run still going has no metrics.json, most runs have no eval): a missing piece
is None or empty, never an error. A JSON/YAML file that is present but broken raises a DataError naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xlam_hpc.errors import ConfigError, DataError
from xlam_hpc.train.history import read_history as history_records

__all__ = [
    "KINDS",
    "RunData",
    "SweepData",
    "SweepTask",
    "is_run_dir",
    "is_sweep_dir",
    "load_run",
    "load_sweep",
    "read_history",
]

KINDS = ("start", "train", "eval", "stop")
"""history.jsonl line kinds (see the trainer)."""


@dataclass
class RunData:
    path: Path
    history: dict[str, list[dict[str, Any]]]
    """kind → lines: "train"/"eval" sorted by step, one per step; "start"/"stop" in file order (read_history)."""
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    ledger: dict[str, Any] | None = None
    evals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(file name, results.json content) of OUTPUT_DIR/eval/*.json, sorted by name."""
    finished: bool = False
    skipped: list[str] = field(default_factory=list)
    """What was read past: files that are not eval results, unreadable eval files, torn history lines."""


@dataclass
class SweepTask:
    index: int
    assignment: dict[str, Any]
    output_dir: Path
    run: RunData | None
    """None when the task's directory holds nothing yet."""


@dataclass
class SweepData:
    path: Path
    keys: list[str]
    tasks: list[SweepTask]


def is_sweep_dir(path: Path) -> bool:
    return (path / "sweep.json").is_file()


def is_run_dir(path: Path) -> bool:
    names = ("config.yaml", "history.jsonl", "metrics.json")
    return any((path / n).is_file() for n in names) or (path / "launch").is_dir()


def read_history(path: Path) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """history.jsonl → (kind → lines, notes), as the run stands now (the trainer's own reading,
    xlam_hpc.train.history.read_history): "train"/"eval" sorted by step, "start"/"stop" in file order; torn
    lines are left out with a note naming file and line."""
    notes: list[str] = []
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for row in history_records(path.parent, notes):
        out.setdefault(row["kind"], []).append(row)
    for kind in ("train", "eval"):
        out[kind].sort(key=lambda r: r["step"])
    return out, notes


def _json_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: unreadable YAML ({exc})") from None
    return data if isinstance(data, dict) else None


def _evals(directory: Path, notes: list[str]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            notes.append(f"{path}: unreadable, left out")
            continue
        if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
            found.append((path.name, data))
        else:
            notes.append(f"{path}: not an eval results file (no 'metrics'), left out")
    return found


def load_run(path: str | Path) -> RunData:
    """Everything the report shows about one run directory (ConfigError when it is not one)."""
    d = Path(path)
    if not d.is_dir() or not is_run_dir(d):
        raise ConfigError(f"{d}: not a run directory (no config.yaml, history.jsonl, metrics.json or launch/)")
    history, notes = read_history(d / "history.jsonl")
    ledger = _json_file(d / "launch" / "ledger.json")
    return RunData(
        path=d,
        history=history,
        config=_config(d / "config.yaml"),
        metrics=_json_file(d / "metrics.json"),
        ledger=ledger,
        evals=_evals(d / "eval", notes),
        finished=(d / "FINISHED").exists(),
        skipped=notes,
    )


def _task_dir(sweep: Path, output_dir: str) -> Path:
    """A task's output_dir as written at submission (maybe relative to where `sweep` ran); else by name
    inside the sweep directory, so a moved or copied sweep still reads."""
    given = Path(output_dir)
    if given.is_dir():
        return given
    return sweep / given.name


def load_sweep(path: str | Path) -> SweepData:
    d = Path(path)
    manifest = _json_file(d / "sweep.json")
    if manifest is None:
        raise ConfigError(f"{d}: not a sweep directory (no sweep.json)")
    tasks_raw = manifest.get("tasks")
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise DataError(f"{d / 'sweep.json'}: no 'tasks' list")
    tasks, keys = [], []
    for t in tasks_raw:
        try:
            index, assignment, output_dir = int(t["index"]), dict(t["assignment"]), str(t["output_dir"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{d / 'sweep.json'}: task {t!r} lacks index/assignment/output_dir ({exc})") from None
        keys += [k for k in assignment if k not in keys]
        out = _task_dir(d, output_dir)
        run = load_run(out) if out.is_dir() and is_run_dir(out) else None
        tasks.append(SweepTask(index=index, assignment=assignment, output_dir=out, run=run))
    return SweepData(path=d, keys=keys, tasks=tasks)
