"""Validation during training and honest run summaries, on real runs (torchrun, gloo, DeepSpeed on CPU).

- data.eval.fraction: held-out trajectories (a pure function of id and split seed) never reach the training
  stream; the validation loss is token-weighted over both ranks and per source; it lands in
  history.jsonl, metrics.json and TensorBoard.
- A run whose steps have no loss token (every sample dropped for length) reports no loss, never loss 0.
"""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.integration.conftest import write_recipe
from xlam_hpc.shard import ShardReader, load_manifest
from xlam_hpc.stream.holdout import held_out
from xlam_hpc.testing.runs import effective_trace, torchrun_train
from xlam_hpc.train.history import read_history

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SPLIT = {"fraction": 0.3, "seed": 5, "max_samples": 64}


def _run(recipe, out, tmp_path, nproc=2):
    proc = torchrun_train(recipe, out, nproc=nproc, log=tmp_path / "runs.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "runs.log").read_text()[-4000:]


def _scalars(out, tag):
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def test_validation_loss_held_out_by_id_over_ranks(train_data, tmp_path):
    shards = train_data["sft"]
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        shards,
        data={"shards": [str(shards)], "global_batch_size": 4, "eval": SPLIT},
        train={"max_steps": 4, "eval_interval": 2},
    )
    out = tmp_path / "run"
    _run(recipe, out, tmp_path)

    # which trajectories the split holds out, read straight from the shards
    ids, held = {}, {}
    with ShardReader(load_manifest(shards)) as reader:
        for source, size in reader.sources.items():
            for i in range(size):
                tid = reader.record(source, i).unique_trajectory_id
                ids[f"{source}:{i}"] = tid
                held.setdefault(source, 0)
                held[source] += held_out(tid, SPLIT["fraction"], SPLIT["seed"])
    assert all(held.values()), held  # both sources have validation samples at this fraction

    trained = {sid for rank in effective_trace(out).values() for rec in rank.values() for sid in rec["sample_ids"]}
    assert trained and not any(held_out(ids[sid], SPLIT["fraction"], SPLIT["seed"]) for sid in trained)

    history = read_history(out)
    evals = [r for r in history if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        assert set(r["by_source"]) == {s for s, n in held.items() if n}
        tokens = sum(v["tokens"] for v in r["by_source"].values())
        assert r["tokens"] == tokens > 0
        weighted = sum(v["loss"] * v["tokens"] for v in r["by_source"].values()) / tokens
        assert r["loss"] == pytest.approx(weighted, rel=1e-9)
    trains = [r for r in history if r["kind"] == "train"]
    assert [r["step"] for r in trains] == [1, 2, 3, 4]
    assert trains[-1]["samples_by_source"] and sum(trains[-1]["samples_by_source"].values()) == 16
    assert all(0 < r["non_pad_fraction"] <= 1 and r["loss_tokens"] > 0 and r["grad_norm"] > 0 for r in trains)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] == evals[-1]["loss"] and metrics["final_loss"] == trains[-1]["loss"]
    assert [s for s, _ in _scalars(out, "eval/loss")] == [2, 4]
    assert _scalars(out, "eval/loss")[-1][1] == pytest.approx(evals[-1]["loss"], rel=1e-6)
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/non_pad_fraction"):
        assert [s for s, _ in _scalars(out, tag)] == [1, 2, 3, 4], tag
    log = (tmp_path / "runs.log").read_text()
    assert "step 4 validation loss" in log and "held_out" in log


def test_steps_without_loss_tokens_report_no_loss(train_data, tmp_path):
    """Every sample is longer than seq_length and overflow is 'drop': no step trains anything."""
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        train_data["sft"],
        collate={"seq_length": 190, "chat_template": "builtin", "overflow": "drop"},
        train={"max_steps": 2},
    )
    out = tmp_path / "run"
    _run(recipe, out, tmp_path, nproc=1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_loss"] is None and metrics["loss_last10_mean"] is None
    assert metrics["steps_without_loss_tokens"] == 2 and metrics["samples_dropped"]["dropped_overlong"] > 0
    trains = [r for r in read_history(out) if r["kind"] == "train"]
    assert [r["loss"] for r in trains] == [None, None] and [r["loss_tokens"] for r in trains] == [0, 0]
    assert _scalars(out, "train/loss") == []
    log = (tmp_path / "runs.log").read_text()
    assert "loss n/a (no loss tokens" in log and "2 step(s) had no loss tokens" in log
