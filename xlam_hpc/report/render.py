"""write_report: the report of a run or sweep directory (report.html + PNGs next to it)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError
from xlam_hpc.report import plots
from xlam_hpc.report.load import RunData, SweepData, is_run_dir, is_sweep_dir, load_run, load_sweep
from xlam_hpc.report.page import DIGITS, cell, esc, figure, none, page, section, table
from xlam_hpc.report.summary import (
    EVAL_METRICS,
    events,
    mixture,
    run_summary,
    source_eval_losses,
)

__all__ = ["REPORT_NAME", "default_output", "write_report"]

REPORT_NAME = "report.html"

SUMMARY_ROWS = [
    ("state", "state", 0),
    ("steps", "steps", 0),
    ("final_loss", "final loss", DIGITS["loss"]),
    ("eval_loss", "last validation loss", DIGITS["loss"]),
    ("tokens_per_s_mean", "tokens/s mean", DIGITS["rate"]),
    ("tokens", "tokens trained (logged windows)", 0),
    ("restarts", "restarts (processes started again)", 0),
    ("preemptions", "preemption / requeue stops (SIGTERM)", 0),
    ("time_limits", "time-limit stops (SIGUSR1/SIGUSR2)", 0),
    ("other_stops", "other signal stops", 0),
    ("ledger_timeouts", "requeue ledger: timeouts", 0),
    ("ledger_preemptions", "requeue ledger: preemptions", 0),
    ("ledger_failures", "requeue ledger: failures", 0),
    ("wall_time_s", "wall time, s (first to last record)", DIGITS["seconds"]),
    ("active_time_s", "time in training processes, s", DIGITS["seconds"]),
]


def default_output(path: str | Path) -> Path:
    return Path(path) / "report" / REPORT_NAME


def write_report(path: str | Path, output: str | Path | None = None, *, tasks: bool = False) -> Path:
    """Render the report of a run directory or a sweep directory; returns the HTML file's path.

    `output` defaults to PATH/report/report.html; the PNGs go next to it. With `tasks`, a sweep's tasks get
    their own reports first (each in its task's report/ folder), and the sweep page links to them.
    """
    d = Path(path)
    out = Path(output) if output is not None else default_output(d)
    if is_sweep_dir(d):
        sweep = load_sweep(d)
        if tasks:
            for t in sweep.tasks:
                if t.run is not None:
                    _write_run(t.run, default_output(t.output_dir))
        return _write_sweep(sweep, out)
    if d.is_dir() and is_run_dir(d):
        return _write_run(load_run(d), out)
    what = "does not exist" if not d.exists() else "is neither a run directory nor a sweep directory"
    raise ConfigError(f"{d} {what} (a run has config.yaml/history.jsonl/metrics.json, a sweep sweep.json)")


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def _png(out: Path, name: str) -> Path:
    return out.parent / f"{out.stem}-{name}.png" if out.name != REPORT_NAME else out.parent / f"{name}.png"


def _name(p: Path | None) -> str | None:
    return None if p is None else p.name


def _write_run(run: RunData, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = list(run.skipped)
    marks = events(run)
    summary = run_summary(run)
    train, evals = run.history["train"], run.history["eval"]
    mix = mixture(run, notes)
    per_source = source_eval_losses(run)
    loss_png = plots.loss_plot(train, evals, marks, _png(out, "loss"))
    rate_png = plots.throughput_plot(train, marks, _png(out, "tokens_per_s"))
    mix_png = plots.mixture_plot(mix, _png(out, "mixture"))
    src_png = plots.source_eval_plot(per_source, _png(out, "validation_by_source"))
    if not train and not evals:
        notes.append("no history.jsonl lines: curves are none")
    sections = [
        section(
            "Summary",
            table(["", "value"], [[f"<th>{esc(t)}</th>", cell(summary[k], d, k)] for k, t, d in SUMMARY_ROWS]),
        ),
        section(
            "Loss",
            figure(_name(loss_png), "loss vs step"),
            _events_html(marks),
        ),
        section("Throughput", figure(_name(rate_png), "tokens/s vs step")),
        section("Mixture (share of samples per source)", _mixture_html(mix), figure(_name(mix_png), "mixture")),
        section(
            "Validation loss per source",
            _source_eval_html(per_source),
            figure(_name(src_png), "validation loss") if per_source else "",
        ),
        section("Evaluation results (eval/*.json)", _evals_html(run.evals)),
    ]
    text = page(f"Run report: {run.path}", f"generated {_stamp()}", sections, notes)
    out.write_text(text, encoding="utf-8")
    return out


def _events_html(marks: list[Any]) -> str:
    if not marks:
        return "<p>Stops and restarts: none</p>"
    return "<p>Stops and restarts:</p><ul>" + "".join(f"<li>{esc(label)}</li>" for _, _, label in marks) + "</ul>"


def _mixture_html(rows: list[tuple[str, float | None, float | None]]) -> str:
    if not rows:
        return none()
    d = DIGITS["share"]
    return table(
        ["source", "requested", "realized"],
        [[cell(name), cell(req, d), cell(real, d)] for name, req, real in rows],
    )


def _source_eval_html(losses: dict[str, list[tuple[int, float]]]) -> str:
    if not losses:
        return none()
    rows = [[cell(src), cell(points[-1][0]), cell(points[-1][1], DIGITS["loss"])] for src, points in losses.items()]
    return table(["source", "step", "last validation loss"], rows)


def _metric_names(groups: list[dict[str, Any]]) -> list[str]:
    seen = {k for g in groups for k in g if not isinstance(g.get(k), dict)}
    return [m for m in EVAL_METRICS if m in seen] + sorted(seen - set(EVAL_METRICS))


def _evals_html(results: list[tuple[str, dict[str, Any]]]) -> str:
    """Overall and by_category tables, one column per results file (before/after side by side)."""
    if not results:
        return none()
    names = [f"{name} ({r.get('model', '?')})" for name, r in results]
    metrics = [r["metrics"] for _, r in results]
    overall = [m.get("overall") or {} for m in metrics]
    d = DIGITS["metric"]
    parts = ["<h3>overall</h3>"]
    parts.append(
        table(["metric", *names], [[cell(k), *(cell(o.get(k), d) for o in overall)] for k in _metric_names(overall)])
    )
    for group in ("by_category", "by_source"):
        by = [m.get(group) or {} for m in metrics]
        keys = sorted({k for b in by for k in b})
        parts.append(f"<h3>{esc(group)}</h3>")
        if not keys:
            parts.append(none())
            continue
        rows = []
        for key in keys:
            cols = [b.get(key) or {} for b in by]
            rows += [[cell(key), cell(m), *(cell(c.get(m), d) for c in cols)] for m in _metric_names(cols)]
        parts.append(table([group.removeprefix("by_"), "metric", *names], rows))
    return "\n".join(parts)


def _write_sweep(sweep: SweepData, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    curves, rows = [], []
    for t in sweep.tasks:
        label = f"task {t.index}: " + ", ".join(f"{k}={v}" for k, v in t.assignment.items())
        params = [cell(str(t.assignment[k]) if k in t.assignment else None) for k in sweep.keys]
        report = default_output(t.output_dir)
        link = (
            f'<td><a href="{esc(Path(os.path.relpath(report, out.parent)).as_posix())}">report</a></td>'
            if report.is_file()
            else cell("none")
        )
        if t.run is None:
            notes.append(f"task {t.index}: {t.output_dir} holds no run yet")
            rows.append([cell(t.index), *params, cell("not started"), *(cell(None) for _ in range(4)), link])
            continue
        notes += t.run.skipped
        s = run_summary(t.run)
        curves.append((label, t.run.history["train"], t.run.history["eval"]))
        rows.append(
            [
                cell(t.index, key="task"),
                *params,
                cell(s["state"], key="state"),
                cell(s["steps"], key="steps"),
                cell(s["final_loss"], DIGITS["loss"], key="final_loss"),
                cell(s["eval_loss"], DIGITS["loss"], key="eval_loss"),
                cell(s["tokens_per_s_mean"], DIGITS["rate"], key="tokens_per_s_mean"),
                link,
            ]
        )
    loss_png = plots.sweep_loss_plot(curves, _png(out, "sweep_loss"))
    header = ["task", *sweep.keys, "state", "steps", "final loss", "last validation loss", "tokens/s mean", "report"]
    sections = [
        section("Tasks", table(header, rows)),
        section("Loss curves", figure(_name(loss_png), "loss vs step, all tasks")),
    ]
    text = page(f"Sweep report: {sweep.path}", f"{len(sweep.tasks)} tasks, generated {_stamp()}", sections, notes)
    out.write_text(text, encoding="utf-8")
    return out
