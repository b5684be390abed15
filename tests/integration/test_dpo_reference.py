"""`train.dpo.reference: precomputed` on 2 ranks with ZeRO-3 (tied embeddings: the chunked loss's head weight is
the partitioned embedding): the stored reference log-probs come from the initial
policy (step 1: log-ratio 0, loss ln 2 per pair), a run interrupted and resumed reads them back and equals the
uninterrupted run bit for bit, and a step beyond the precomputed ones is a clear error, never a recompute.

(`reference: model` on ZeRO-2 and ZeRO-3 and `precomputed` on ZeRO-2 are checked at step 1 by
test_micro_batches.py, which runs them anyway.)
"""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch

from tests.integration.conftest import write_recipe
from xlam_hpc.testing.runs import effective_trace, final_weights, rank_pids, send, torchrun_train, wait_for_step

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 4


def _run(recipe, out, log, *overrides) -> int:
    return torchrun_train(recipe, out, *overrides, log=log).wait(timeout=600)


def test_precomputed_reference_zero3_resumes_exactly(train_data, tmp_path):
    recipe = write_recipe(
        tmp_path / "dpo.yaml",
        train_data["dpo"],
        task="dpo",
        model={"dropout": 0.0, "config_overrides": {"tie_word_embeddings": True}},  # the head is the embedding
        train={
            "max_steps": STEPS,
            "precision": "fp32",
            "deepspeed": "zero3",
            "micro_batch_tokens": 2000,
            "dpo": {"reference": "precomputed", "beta": 0.5},
        },
    )
    log = tmp_path / "runs.log"
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _run(recipe, full, log) == 0, log.read_text()[-4000:]
    stored = {}
    for path in sorted((full / "reference").glob("rank*.json")):
        for step, values in json.loads(path.read_text()).items():
            stored.setdefault(int(step), {}).update(values)
    assert sorted(stored) == list(range(STEPS)) and (full / "reference" / "COMPLETE").exists()

    a = effective_trace(full)
    pairs = [len(a[rank][1]["sample_ids"]) for rank in (0, 1)]
    for rank in (0, 1):  # step 1: policy == initial policy, every pair's loss is ln 2
        assert set(a[rank][1]["sample_ids"]) <= set(stored[0])
        assert math.isclose(a[rank][1]["loss"], pairs[rank] * math.log(2) / (sum(pairs) / 2), rel_tol=1e-6)

    proc = torchrun_train(recipe, cut, log=log)
    pids = rank_pids(proc, 2)
    wait_for_step(cut, 2, rank=1, launcher=proc)
    send(pids[1], signal.SIGTERM)
    assert proc.wait(timeout=600) != 0 and "SIGTERM: saved checkpoint-" in log.read_text()
    written = {p.name: p.stat().st_mtime_ns for p in (cut / "reference").iterdir()}
    assert _run(recipe, cut, log) == 0, log.read_text()[-4000:]
    assert {p.name: p.stat().st_mtime_ns for p in (cut / "reference").iterdir()} == written  # read, not redone

    b = effective_trace(cut)
    for rank in (0, 1):
        for step in range(1, STEPS + 1):
            assert a[rank][step]["sample_ids"] == b[rank][step]["sample_ids"], (rank, step)
            assert a[rank][step]["loss"] == b[rank][step]["loss"], (rank, step)
    wa, wb = final_weights(full), final_weights(cut)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # more steps than were precomputed: a clear error, not a recompute with the trained policy
    assert _run(recipe, cut, log, f"train.max_steps={STEPS + 1}") != 0
    assert f"precomputed holds no reference log-probs for step {STEPS}" in log.read_text()
