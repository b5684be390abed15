"""The headline: interrupted + resumed training equals the uninterrupted run, bit for bit.

2 real ranks (torchrun, gloo, DeepSpeed on CPU), tiny Mistral with dropout 0.1. The interrupted run is
stopped by SIGTERM to one rank (the other rank learns it through the collective flag), then by SIGUSR1
to the other rank, and resumed each time. Sample-id traces, per-step losses and final weights must be
identical; CPU kernels here are deterministic for a fixed thread count, so no tolerance is needed.
"""

from __future__ import annotations

import json
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.integration.conftest import write_recipe
from xlam_hpc.testing.runs import effective_trace, final_weights, rank_pids, send, torchrun_train, wait_for_step
from xlam_hpc.train.checkpoint import verify_checkpoint
from xlam_hpc.train.history import read_history

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CASES = {
    # with validation: the held-out split and the validation losses must not change across resumes either
    "sft-zero2": {
        "task": "sft",
        "train": {"deepspeed": "zero2", "eval_interval": 3},
        "eval": {"fraction": 0.25, "seed": 1, "max_samples": 16},
    },
    "dpo-zero2": {"task": "dpo", "train": {"deepspeed": "zero2", "dpo": {"beta": 0.2}}},
    "lora-sft-zero3": {"task": "sft", "train": {"deepspeed": "zero3", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}},
    # LoRA DPO: the reference is the base model with adapters disabled (same module, eval mode)
    "lora-dpo-zero2": {"task": "dpo", "train": {"deepspeed": "zero2", "lora": {"r": 4, "alpha": 8}}},
}


def _run(recipe, out, tmp_path, *overrides):
    proc = torchrun_train(recipe, out, *overrides, log=tmp_path / "runs.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "runs.log").read_text()[-4000:]


def _interrupt(recipe, out, tmp_path, at_step, rank, sig):
    proc = torchrun_train(recipe, out, log=tmp_path / "runs.log")
    pids = rank_pids(proc, 2)
    wait_for_step(out, at_step, rank=rank, launcher=proc)
    send(pids[rank], sig)
    assert proc.wait(timeout=600) != 0  # the ranks exit with 75 ("checkpointed, requeue me")
    log = (tmp_path / "runs.log").read_text()
    assert log.count("exitcode  : 75") >= 1 and f"{signal.Signals(sig).name}: saved checkpoint-" in log


@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_resumed_run_equals_uninterrupted(case, train_data, tmp_path):
    spec = CASES[case]
    shards = train_data[spec["task"]]
    data = {"shards": [str(shards)], "global_batch_size": 4, "eval": spec.get("eval")}
    recipe = write_recipe(tmp_path / "recipe.yaml", shards, task=spec["task"], train=spec["train"], data=data)
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(recipe, full, tmp_path)
    _interrupt(recipe, cut, tmp_path, at_step=3, rank=1, sig=signal.SIGTERM)
    latest = (cut / "latest").read_text().strip()
    assert latest.startswith("checkpoint-") and verify_checkpoint(cut / latest) is None
    _interrupt(recipe, cut, tmp_path, at_step=int(latest.split("-")[1]) + 2, rank=0, sig=signal.SIGUSR1)
    _run(recipe, cut, tmp_path)
    a, b = effective_trace(full), effective_trace(cut)
    assert sorted(a) == sorted(b) == [0, 1]
    for rank in (0, 1):
        assert sorted(a[rank]) == list(range(1, 9))
        for step in range(1, 9):
            assert a[rank][step]["sample_ids"] == b[rank][step]["sample_ids"], (rank, step)
            assert a[rank][step]["loss"] == b[rank][step]["loss"], (rank, step)
    wa, wb = final_weights(full), final_weights(cut)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((cut / "FINISHED").read_text())["step"] == 8
    # the run's history as it stands: every step once, the same losses (and validation losses)
    ha, hb = read_history(full), read_history(cut)
    for kind in ("train", "eval"):
        la, lb = ([(r["step"], r["loss"]) for r in h if r["kind"] == kind] for h in (ha, hb))
        assert la == lb, kind
    assert [r["step"] for r in ha if r["kind"] == "train"] == list(range(1, 9))
    assert [r["step"] for r in hb if r["kind"] == "eval"] == ([3, 6, 8] if "eval" in spec else [])
    events = [(r["kind"], r.get("signal")) for r in hb if r["kind"] in ("start", "stop")]
    assert events == [("start", None), ("stop", "SIGTERM"), ("start", None), ("stop", "SIGUSR1"), ("start", None)]
    # TensorBoard keeps each step once, the resumed steps included
    acc = EventAccumulator(str(cut / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 9))
    # it really trained: the global mean loss (mean of the ranks' shares) went down
    mean = [(a[0][s]["loss"] + a[1][s]["loss"]) / 2 for s in range(1, 9)]
    assert sum(mean[-3:]) / 3 < sum(mean[:2]) / 2
