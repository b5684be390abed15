"""What the report says about a run, as plain values: events, summary numbers, mixture, eval tables.

Pure functions of a RunData (the mixture also reads the shard manifests the recipe names). The HTML and
the plots only lay these values out, and `fmt` is the one number format of the page.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from xlam_hpc.errors import XlamError
from xlam_hpc.report.load import RunData
from xlam_hpc.shard.manifest import load_manifest
from xlam_hpc.stream.mixture import normalize_weights

__all__ = [
    "EVAL_METRICS",
    "Event",
    "events",
    "fmt",
    "mixture",
    "run_state",
    "run_summary",
    "source_eval_losses",
]

TIME_LIMIT_SIGNALS = {"SIGUSR1", "SIGUSR2"}
PREEMPTION_SIGNALS = {"SIGTERM"}

EVAL_METRICS = (
    "n",
    "parse_rate",
    "tool_name_accuracy",
    "argument_exact_match",
    "whole_call_exact_match",
    "ast_accuracy",
    "n_irrelevance",
    "irrelevance_accuracy",
    "calls_when_none",
)
"""Metric rows of the eval tables, in this order (others a results file has follow, sorted)."""

Event = tuple[int, str, str]
"""(step, kind, label): kind is 'preemption', 'time limit', 'stop' or 'restart'."""


def fmt(value: Any, digits: int = 4) -> str:
    """The page's one number format: None → 'none', ints as they are, floats with `digits` decimals."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def events(run: RunData) -> list[Event]:
    """Stops (by signal) and restarts, by step."""
    out: list[Event] = []
    for row in run.history["stop"]:
        sig = str(row.get("signal", "unknown"))
        if sig in PREEMPTION_SIGNALS:
            kind = "preemption"
        elif sig in TIME_LIMIT_SIGNALS:
            kind = "time limit"
        else:
            kind = "stop"
        out.append((row["step"], kind, f"{kind} ({sig}) at step {row['step']}"))
    for i, row in enumerate(run.history["start"]):
        # restart counts Slurm/launcher requeues; a second start by hand still has restart 0
        restart = row.get("restart") or 0
        if restart > 0 or i > 0:
            what = f"restart {restart}" if restart > 0 else "started again"
            out.append((row["step"], "restart", f"{what} from step {row['step']}"))
    return sorted(out)


def _last(rows: list[dict[str, Any]], key: str) -> Any:
    for row in reversed(rows):
        if row.get(key) is not None:
            return row[key]
    return None


def _wall_times(run: RunData) -> tuple[float | None, float | None]:
    """(first to last record, sum over processes of their first to last record) in seconds."""
    rows = sorted(
        (r for kind in run.history.values() for r in kind if isinstance(r.get("time"), int | float)),
        key=lambda r: r["time"],
    )
    if not rows:
        return None, None
    span = float(rows[-1]["time"] - rows[0]["time"])
    active, seg_start, seg_last = 0.0, rows[0]["time"], rows[0]["time"]
    for r in rows[1:]:
        if r["kind"] == "start":
            active += seg_last - seg_start
            seg_start = r["time"]
        seg_last = r["time"]
    return span, float(active + seg_last - seg_start)


def run_state(run: RunData) -> str:
    if run.finished:
        return "finished"
    history = (run.ledger or {}).get("history") or []
    if history and history[-1].get("action") == "stop":
        return f"gave up ({history[-1].get('reason')})"
    return "not finished"


def run_summary(run: RunData) -> dict[str, Any]:
    """The summary table: history first (it covers every process of a resumed run), metrics.json otherwise."""
    train, metrics = run.history["train"], run.metrics or {}
    rates = [float(r["tokens_per_s"]) for r in train if isinstance(r.get("tokens_per_s"), int | float)]
    kinds = [kind for _, kind, _ in events(run)]
    ledger = run.ledger or {}
    span, active = _wall_times(run)
    return {
        "state": run_state(run),
        "steps": train[-1]["step"] if train else metrics.get("step"),
        "final_loss": _last(train, "loss") if train else metrics.get("final_loss"),
        "eval_loss": _last(run.history["eval"], "loss") if run.history["eval"] else metrics.get("eval_loss"),
        "tokens_per_s_mean": sum(rates) / len(rates) if rates else metrics.get("tokens_per_s_mean"),
        "tokens": sum(int(r.get("tokens") or 0) for r in train) if train else None,
        "restarts": kinds.count("restart"),
        "preemptions": kinds.count("preemption"),
        "time_limits": kinds.count("time limit"),
        "other_stops": kinds.count("stop"),
        "ledger_timeouts": ledger.get("timeouts"),
        "ledger_preemptions": ledger.get("preemptions"),
        "ledger_failures": ledger.get("failures"),
        "wall_time_s": span,
        "active_time_s": active,
    }


def _source_sizes(shards: list[Any], notes: list[str]) -> dict[str, int] | None:
    sizes: dict[str, int] = {}
    for d in shards:
        try:
            manifest = load_manifest(Path(str(d)))
        except XlamError as exc:
            notes.append(f"requested mixture unknown: {exc}")
            return None
        sizes.update({name: int(s.get("num_samples", 0)) for name, s in manifest.sources.items()})
    return sizes


def mixture(run: RunData, notes: list[str]) -> list[tuple[str, float | None, float | None]]:
    """(source, requested share, realized share) per source. Requested: data.weights normalized (unlisted
    sources at data.weights_default > 0 included), or by source size from the shard manifests when empty;
    realized: the last train line's samples_by_source."""
    data = (run.config or {}).get("data") or {}
    weights = data.get("weights") or {}
    requested: dict[str, float] | None = None
    default = data.get("weights_default")
    try:
        if weights and not (default and data.get("shards")):  # the listed sources are the whole mixture
            requested = normalize_weights({k: float(v) for k, v in weights.items()}, {k: 1 for k in weights})
        elif data.get("shards"):  # by source size, or unlisted sources at the default
            sizes = _source_sizes(list(data["shards"]), notes)
            requested = normalize_weights(weights, sizes, default) if sizes is not None else None
    except (XlamError, TypeError, ValueError) as exc:
        notes.append(f"requested mixture unknown: {exc}")
    counts = _last(run.history["train"], "samples_by_source") or {}
    total = sum(counts.values())
    realized = {k: v / total for k, v in counts.items()} if total else {}
    names = sorted(set(requested or {}) | set(realized))
    return [
        (n, None if requested is None else requested.get(n, 0.0), realized.get(n, 0.0) if realized else None)
        for n in names
    ]


def source_eval_losses(run: RunData) -> dict[str, list[tuple[int, float]]]:
    """source → [(step, validation loss)] from the eval lines' by_source."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in run.history["eval"]:
        for source, v in (row.get("by_source") or {}).items():
            if isinstance(v, dict) and v.get("loss") is not None:
                out.setdefault(source, []).append((row["step"], float(v["loss"])))
    return dict(sorted(out.items()))
