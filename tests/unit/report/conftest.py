"""Run directories as the trainer, the requeue decision and `xlam-hpc eval` leave them, written by hand.

The history has two processes: a fresh start, a SIGTERM stop at step 4, a restart from checkpoint 2 (steps 3
and 4 are written again: the later lines must win), a SIGUSR1 stop at 6 and a third process to step 8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

T0 = 1_700_000_000.0


def train_line(step: int, loss: float | None, rate: float, counts: dict[str, int], t: float, restart: int = 0):
    return {
        "kind": "train",
        "step": step,
        "loss": loss,
        "lr": 1e-3,
        "grad_norm": 1.5,
        "tokens_per_s": rate,
        "tokens": 1000 + step,
        "loss_tokens": 500,
        "non_pad_fraction": 0.9,
        "samples_by_source": counts,
        "restart": restart,
        "time": t,
    }


def history_rows(sources: tuple[str, str] = ("alpha", "beta")) -> list[dict[str, Any]]:
    a, b = sources
    rows: list[dict[str, Any]] = [{"kind": "start", "step": 0, "restart": 0, "time": T0}]
    for s in range(1, 5):
        rows.append(train_line(s, 3.0 - 0.1 * s, 100.0 * s, {a: 3 * s, b: s}, T0 + 10 * s))
    rows.append(
        {
            "kind": "eval",
            "step": 2,
            "loss": 2.95,
            "tokens": 64,
            "by_source": {a: {"loss": 2.9, "tokens": 40}, b: {"loss": 3.1, "tokens": 24}},
            "time": T0 + 21,
        }
    )
    rows.append({"kind": "stop", "step": 4, "signal": "SIGTERM", "time": T0 + 45})
    # second process (resumed from step 2): steps 3 and 4 again, with other values
    rows.append({"kind": "start", "step": 2, "restart": 1, "time": T0 + 100})
    for s in range(3, 7):
        rows.append(train_line(s, 2.5 - 0.1 * s, 200.0, {a: 3 * s, b: s}, T0 + 100 + 10 * s, restart=1))
    rows.append(
        {
            "kind": "eval",
            "step": 6,
            "loss": 2.05,
            "tokens": 64,
            "by_source": {a: {"loss": 2.0, "tokens": 40}, b: {"loss": 2.2, "tokens": 24}},
            "time": T0 + 161,
        }
    )
    rows.append({"kind": "stop", "step": 6, "signal": "SIGUSR1", "time": T0 + 165})
    rows.append({"kind": "start", "step": 6, "restart": 2, "time": T0 + 300})
    for s in (7, 8):
        rows.append(train_line(s, 2.5 - 0.1 * s, 300.0, {a: 3 * s, b: s}, T0 + 300 + 10 * (s - 6), restart=2))
    return rows


def eval_results(model: str, scale: float, categories: tuple[str, ...] = ("simple", "parallel")) -> dict[str, Any]:
    def group(n: int) -> dict[str, Any]:
        return {
            "n": n,
            "parse_rate": 1.0,
            "tool_name_accuracy": 0.5 * scale,
            "argument_exact_match": 0.25 * scale,
            "whole_call_exact_match": 0.25 * scale,
            "ast_accuracy": None,
        }

    return {
        "model": model,
        "data": ["heldout.jsonl"],
        "benches": [],
        "style": "mistral",
        "max_new_tokens": 64,
        "n": 8,
        "metrics": {
            "overall": group(8),
            "by_source": {"toolcall": group(8)},
            "by_category": {c: group(4) for c in categories},
        },
        "items_file": "items.jsonl",
        "created": "2026-11-30T22:00:00",
    }


def write_run(
    out: Path,
    *,
    shards: list[str] | None = None,
    weights: dict[str, float] | None = None,
    rows: list[dict[str, Any]] | None = None,
    finished: bool = True,
    evals: bool = True,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    recipe = {
        "task": "sft",
        "output_dir": str(out),
        "data": {"shards": shards or ["/nonexistent/shards"], "weights": weights or {}},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(recipe))
    rows = history_rows() if rows is None else rows
    (out / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "launch").mkdir(exist_ok=True)
    (out / "launch" / "ledger.json").write_text(json.dumps({"timeouts": 1, "preemptions": 1, "failures": 0}))
    if finished:
        (out / "FINISHED").write_text(json.dumps({"step": 8}))
        (out / "metrics.json").write_text(json.dumps({"step": 8, "final_loss": 1.7, "tokens_per_s_mean": 300.0}))
    if evals:
        (out / "eval").mkdir(exist_ok=True)
        (out / "eval" / "after.json").write_text(json.dumps(eval_results("run/final", 1.5)))
        (out / "eval" / "before.json").write_text(json.dumps(eval_results("tiny-mistral", 1.0)))
        (out / "eval" / "after.items.jsonl").write_text("{}\n")
    return out


def assert_png_drawn(path: Path) -> None:
    """A real PNG (signature, decodes) with more than one color."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.var() > 0, path
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2, path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", weights={"alpha": 3, "beta": 1})
