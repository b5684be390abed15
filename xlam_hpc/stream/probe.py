"""`xlam-hpc stream`: run the loader alone and write the sample-id trace that training also writes.

Trace lines: {step, rank, sample_ids, tokens, pad_fraction}; the final loader state goes to a JSON file,
which `--resume` accepts to continue the same stream (with any --world-size).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from xlam_hpc.errors import ConfigError, ResumeError
from xlam_hpc.recipe import Recipe

__all__ = ["run_probe", "trace_record"]


def trace_record(step: int, batch: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One trace line for a batch (the loader probe and the trainer write the same keys)."""
    return {
        "step": step,
        "rank": batch["rank"],
        "sample_ids": batch["sample_ids"],
        "tokens": batch["num_tokens"],
        "pad_fraction": round(float(batch["pad_fraction"]), 6),
        **extra,
    }


def run_probe(
    recipe: Recipe,
    *,
    steps: int,
    rank: int,
    world_size: int,
    trace: str | None,
    resume: str | None = None,
    state_out: str | None = None,
    allow_fingerprint_mismatch: bool = False,
) -> dict[str, Any]:
    from xlam_hpc.stream import build_loader

    if steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    tokenizer = recipe.load_tokenizer()
    loader = build_loader(
        recipe.data,
        recipe.collate,
        tokenizer,
        rank=rank,
        world_size=world_size,
        seed=recipe.seed,
        task=recipe.task,
    )
    if resume:
        try:
            state = json.loads(Path(resume).read_text())
        except (OSError, ValueError) as exc:
            raise ResumeError(f"{resume}: cannot read loader state ({exc})") from None
        loader.load_state_dict(state, allow_fingerprint_mismatch=allow_fingerprint_mismatch)
    with contextlib.ExitStack() as stack:
        stack.callback(loader.close)
        out = stack.enter_context(Path(trace).open("a", encoding="utf-8")) if trace else None
        for _ in range(steps):
            step = loader.steps + 1  # 1-based, like the trainer's optimizer steps
            batch = next(loader)
            if out:
                out.write(json.dumps(trace_record(step, batch)) + "\n")
    state = loader.state_dict()
    target = state_out or (f"{trace}.state.json" if trace else None)
    if target:
        Path(target).write_text(json.dumps(state, indent=1) + "\n")
    return state
