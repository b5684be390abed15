"""OUTPUT_DIR/history.jsonl: what happened during a run, one JSON object per line, written by rank 0.

Kinds: "start" (a training process began at `step`; `restart` counts the job's restarts), "train" (a log
step), "eval" (a validation pass), "stop" (a signal-triggered save). The file is append-only and survives
resumes: a resume from checkpoint S redoes the steps after S, so readers drop the lines of those steps
written before the resume — `read_history` does. TensorBoard gets the same scalars.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["HISTORY", "History", "read_history"]

HISTORY = "history.jsonl"


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class _Wandb:
    """The same scalars to Weights & Biases (train.report_to: [wandb]); one W&B run per output_dir, resumed
    across restarts. Credentials come from wandb's own environment/config, never from the recipe."""

    def __init__(self, out: Path, run_id: str) -> None:
        import wandb

        self.run = wandb.init(id=run_id, resume="allow", dir=str(out), name=out.name)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.run.log({tag: value}, step=step)

    def close(self) -> None:
        self.run.finish()


class History:
    """Rank 0's writer of history.jsonl and the scalars of train.report_to (other ranks get a no-op)."""

    def __init__(
        self,
        out: Path,
        *,
        enabled: bool,
        step: int,
        restart: int,
        report_to: tuple[str, ...] = ("tensorboard",),
        run_id: str = "",
    ) -> None:
        self.enabled, self.restart = enabled, restart
        self._file = None
        self._sinks: list[Any] = []
        if not enabled:
            return
        self._file = (out / HISTORY).open("a+", encoding="utf-8")
        self._file.seek(0, 2)
        if self._file.tell():  # a process killed mid-line left a torn line: end it, or our first line joins it
            self._file.seek(self._file.tell() - 1)
            torn = self._file.read(1) != "\n"
            self._file.seek(0, 2)
            if torn:
                self._file.write("\n")
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops TensorBoard points of steps *after* the checkpoint we resumed from (written
            # before the stop, now redone); the resumed step's own point was logged before it was saved: keep it
            self._sinks.append(SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if step else None))
        if "wandb" in report_to:
            self._sinks.append(_Wandb(out, run_id))
        self._write({"kind": "start", "step": step, "restart": restart})
        self._scalar("run/restarts", restart, step)

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
            self._file.flush()

    def _scalar(self, tag: str, value: float, step: int) -> None:
        for sink in self._sinks:
            sink.add_scalar(tag, value, step)

    def train(self, step: int, record: dict[str, Any]) -> None:
        """A log step: loss (None = the step had no loss tokens), lr, grad_norm, tokens_per_s, tokens,
        loss_tokens, non_pad_fraction, samples_by_source (cumulative)."""
        if not self.enabled:
            return
        record = {**record, "loss": _finite(record.get("loss")), "grad_norm": _finite(record.get("grad_norm"))}
        self._write({"kind": "train", "step": step, **record, "restart": self.restart})
        for key in ("loss", "lr", "grad_norm", "tokens_per_s", "non_pad_fraction", "loss_tokens"):
            if record.get(key) is not None:
                self._scalar(f"train/{key}", record[key], step)
        counts = record.get("samples_by_source") or {}
        total = sum(counts.values())
        for source, n in counts.items():
            self._scalar(f"mixture/{source}", n / total if total else 0.0, step)

    def eval(self, step: int, result: dict[str, Any]) -> None:
        """A validation pass: loss and tokens overall and by_source."""
        if not self.enabled:
            return
        self._write({"kind": "eval", "step": step, **result})
        if result["loss"] is not None:
            self._scalar("eval/loss", result["loss"], step)
        for source, r in result.get("by_source", {}).items():
            self._scalar(f"eval/loss/{source}", r["loss"], step)

    def stop(self, step: int, signal: str) -> None:
        self._write({"kind": "stop", "step": step, "signal": signal})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        for sink in self._sinks:
            sink.close()


def read_history(out: str | Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """The records of OUTPUT_DIR/history.jsonl in file order, as the run stands now: a "start" line at step S
    (a resume from checkpoint S) discards the "train"/"eval" lines of steps after S written before it (they
    were redone), and a later line of the same (kind, step) replaces the earlier one. "start"/"stop" lines
    are all kept. An unreadable line (torn by a killed process) is left out, with a note in `notes`."""
    path = Path(out) / HISTORY
    if not path.exists():
        return []
    kept: dict[tuple[str, int], dict[str, Any]] = {}  # insertion-ordered: file order
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            kind, step = str(r["kind"]), r["step"]
            if not isinstance(step, int) or isinstance(step, bool):
                raise TypeError(f"step {step!r} is not an integer")
        except (ValueError, KeyError, TypeError) as exc:
            if notes is not None:
                notes.append(f"{path}:{n}: not a history line, left out ({exc})")
            continue
        if kind == "start":
            for key in [k for k in kept if k[0] in ("train", "eval") and k[1] > step]:
                del kept[key]
        if kind in ("train", "eval"):
            kept.pop((kind, step), None)  # the redone step goes where it was written last
            kept[(kind, step)] = r
        else:
            kept[(f"{kind}#{n}", step)] = r
    return list(kept.values())
