"""Micro-batches under `train.micro_batch_tokens` give the one-shot step: same per-step losses, same weights.

2 real ranks (torchrun, gloo, DeepSpeed on CPU, fp32, dropout 0). Per task, one run per budget: the whole
rank share at once, and budgets that split it into several micro-batches (the ranks' counts differ, so the
rank with fewer runs zero-weighted fillers); the finest split runs on ZeRO-3. The DPO runs also vary the
reference (model on ZeRO-2, precomputed, model on ZeRO-3): at step 1 the policy is the reference, so the
logged log-ratio margin is exactly 0 and the loss is ln 2 per pair on every rank.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from tests.integration.conftest import write_recipe
from xlam_hpc.testing.runs import effective_trace, final_weights, torchrun_train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 1  # one update: equal weights after it are the point; each launch costs ~30 s of start-up


def _run(tmp_path, name, recipe, *overrides, dpo: bool = False) -> tuple[dict, dict, list[int]]:
    """Trace, final weights and the logged micro-batch count of each step."""
    out, log = tmp_path / name, tmp_path / f"{name}.log"
    proc = torchrun_train(recipe, out, *overrides, log=log)
    text = log.read_text() if proc.wait(timeout=600) == 0 else pytest.fail(log.read_text()[-4000:])
    counts = [int(n) for n in re.findall(r"'micro_batches': (\d+)", text)]
    assert len(counts) == STEPS, text[-3000:]
    if dpo:  # step 1: policy == reference bit for bit, so the logged mean log-ratio margin is exactly 0
        margins = re.findall(r"'reward_margin': ([^,}]+)", text)
        assert margins and float(margins[0]) == 0.0, margins
    return effective_trace(out), final_weights(out), counts


def _same(runs: list[tuple[dict, dict, list[int]]]) -> None:
    (trace, weights, _), *others = runs
    for other, other_weights, counts in others:
        for rank in (0, 1):
            for step in range(1, STEPS + 1):
                a, b = trace[rank][step], other[rank][step]
                assert a["sample_ids"] == b["sample_ids"]
                assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5, abs_tol=1e-6), (rank, step, counts)
        assert weights.keys() == other_weights.keys()
        for key, value in weights.items():
            torch.testing.assert_close(other_weights[key], value, rtol=0, atol=5e-5, msg=f"{key} {counts}")


def test_sft_packed_micro_batches_equal_one_shot(train_data, tmp_path):
    # 16 samples per rank, packed into rows of 256: 6 to 9 rows each
    recipe = write_recipe(
        tmp_path / "sft.yaml",
        train_data["sft"],
        data={"global_batch_size": 32},
        collate={"seq_length": 256, "packing": True},
        model={"dropout": 0.0},
        train={"max_steps": STEPS, "precision": "fp32"},
    )
    # the last on ZeRO-3: the fused loss's head-weight gradient must reach the partitioned parameter
    budgets = {16 * 256: "zero2", 5 * 256: "zero2", 256: "zero3"}
    runs = [
        _run(tmp_path, f"b{b}", recipe, f"train.micro_batch_tokens={b}", f"train.deepspeed={z}")
        for b, z in budgets.items()
    ]
    assert [r[2][0] for r in runs] == [1, 2, 9], [r[2] for r in runs]  # one row each: the 9 of rank 0
    _same(runs)


def test_dpo_micro_batches_and_references_equal_one_shot(train_data, tmp_path):
    recipe = write_recipe(
        tmp_path / "dpo.yaml",
        train_data["dpo"],
        task="dpo",
        data={"global_batch_size": 16},
        model={"dropout": 0.0},
        train={"max_steps": STEPS, "precision": "fp32", "lr": 1e-3, "dpo": {"beta": 0.5}},
    )
    runs = [
        _run(tmp_path, "whole", recipe, "train.micro_batch_tokens=1000000", "train.deepspeed=zero2", dpo=True),
        _run(tmp_path, "half", recipe, "train.micro_batch_tokens=4000", "train.dpo.reference=precomputed", dpo=True),
        _run(tmp_path, "pairs", recipe, "train.micro_batch_tokens=1", "train.deepspeed=zero3", dpo=True),
    ]
    counts = [r[2][0] for r in runs]
    assert counts[0] == 1 and 1 < counts[1] < counts[2] and counts[2] >= 7, counts
    for trace, _, _ in runs:  # policy == reference at step 1: each pair's loss is ln 2
        pairs = [len(trace[rank][1]["sample_ids"]) for rank in (0, 1)]
        for rank in (0, 1):  # a rank's share: its pairs' sum / (global pairs / world size)
            want = pairs[rank] * math.log(2) / (sum(pairs) / 2)
            assert math.isclose(trace[rank][1]["loss"], want, rel_tol=1e-6), (rank, pairs)
    _same(runs)
