"""The report's figures as PNG files (matplotlib's Agg canvas: no display, no global pyplot state).

Each function writes one PNG and returns its path, or None when there is nothing to draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from xlam_hpc.report.summary import Event

__all__ = ["loss_plot", "mixture_plot", "source_eval_plot", "sweep_loss_plot", "throughput_plot"]

EVENT_STYLES = {
    "preemption": {"color": "tab:red", "linestyle": "--"},
    "time limit": {"color": "tab:orange", "linestyle": ":"},
    "stop": {"color": "tab:purple", "linestyle": "-."},
    "restart": {"color": "tab:green", "linestyle": "-", "alpha": 0.5},
}


def _figure(width: float = 8.0, height: float = 4.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: Path) -> Path:
    for ax in fig.axes:
        if ax.get_xlabel() == "step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _points(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), int | float)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _mark_events(ax: Any, marks: list[Event]) -> None:
    labelled: set[str] = set()
    for step, kind, _ in marks:
        ax.axvline(step, label=None if kind in labelled else kind, **EVENT_STYLES[kind])
        labelled.add(kind)


def loss_plot(train: list[dict[str, Any]], evals: list[dict[str, Any]], marks: list[Event], path: Path) -> Path | None:
    """Training and validation loss vs step, stops and restarts as vertical lines."""
    (xs, ys), (ex, ey) = _points(train, "loss"), _points(evals, "loss")
    if not xs and not ey:
        return None
    fig, ax = _figure()
    if xs:
        ax.plot(xs, ys, label="train loss", color="tab:blue", marker="." if len(xs) < 50 else None)
    if ex:
        ax.plot(ex, ey, label="validation loss", color="black", marker="o")
    _mark_events(ax, marks)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def throughput_plot(train: list[dict[str, Any]], marks: list[Event], path: Path) -> Path | None:
    xs, ys = _points(train, "tokens_per_s")
    if not xs:
        return None
    fig, ax = _figure(8.0, 3.0)
    ax.plot(xs, ys, color="tab:green", marker="." if len(xs) < 50 else None, label="tokens/s")
    _mark_events(ax, marks)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens/s (all ranks)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def mixture_plot(rows: list[tuple[str, float | None, float | None]], path: Path) -> Path | None:
    """Requested vs realized share per source, side by side."""
    if not rows or all(r is None and z is None for _, r, z in rows):
        return None
    fig, ax = _figure(max(4.0, 1.2 * len(rows) + 2), 3.5)
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r or 0.0 for _, r, _ in rows], width=0.4, label="requested", color="tab:gray")
    ax.bar([x + 0.2 for x in xs], [z or 0.0 for _, _, z in rows], width=0.4, label="realized", color="tab:blue")
    ax.set_xticks(list(xs), [name for name, _, _ in rows], rotation=20 if len(rows) > 4 else 0)
    ax.set_ylabel("share of samples")
    ax.legend()
    return _save(fig, path)


def source_eval_plot(losses: dict[str, list[tuple[int, float]]], path: Path) -> Path | None:
    if not losses:
        return None
    fig, ax = _figure()
    for source, points in losses.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=source)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def sweep_loss_plot(curves: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]], path: Path) -> Path | None:
    """One train loss curve per task (solid) and its validation loss (dashed, same color)."""
    drawn = [(label, _points(t, "loss"), _points(e, "loss")) for label, t, e in curves]
    if not any(xs or ex for _, (xs, _), (ex, _) in drawn):
        return None
    fig, ax = _figure(9.0, 4.5)
    for i, (label, (xs, ys), (ex, ey)) in enumerate(drawn):
        color = f"C{i % 10}"
        if xs:
            ax.plot(xs, ys, color=color, label=label)
        if ex:
            ax.plot(ex, ey, color=color, linestyle="--", marker="o", label=f"{label} (validation)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)
