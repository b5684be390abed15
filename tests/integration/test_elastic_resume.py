"""Elastic resume: a run saved by N ranks continues with M ranks (real torchrun, gloo, DeepSpeed on CPU).

Each case trains STEPS steps uninterrupted with N ranks, and CUT steps with N ranks then the rest with M
ranks (max_steps raised; constant LR, so the schedule is the same). Dropout is off: with it, only the
ranks' dropout masks would differ after the change (each rank reseeds from (seed, rank, step)). The
global sample stream must be the uninterrupted run's, step by step, and losses and final weights must
match it to float tolerance (the gradient sum over ranks is taken in another order): had the Adam
moments been lost, the resumed updates would differ by far more (checked against the weights at the cut).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.integration.conftest import write_recipe
from xlam_hpc.stream.seeding import seed_rank
from xlam_hpc.testing.runs import effective_trace, final_weights, torchrun_train
from xlam_hpc.train.checkpoint import Collectives, verify_checkpoint
from xlam_hpc.train.elastic import UNIVERSAL, ensure_universal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STEPS, CUT = 4, 2
CASES = {
    "zero2-2to1": ({"deepspeed": "zero2"}, 2, 1),
    "zero3-1to2": ({"deepspeed": "zero3"}, 1, 2),
    "lora-zero3-2to1": ({"deepspeed": "zero3", "lora": {"r": 4, "alpha": 8}}, 2, 1),
}


def _run(recipe: Path, out: Path, log: Path, nproc: int, *overrides: str) -> str:
    start = log.stat().st_size if log.exists() else 0
    proc = torchrun_train(recipe, out, *overrides, nproc=nproc, log=log)
    code = proc.wait(timeout=600)
    text = log.read_bytes()[start:].decode(errors="replace")  # this run's output only
    assert code == 0, text[-4000:]
    return text


def _global_stream(trace: dict[int, dict[int, dict]], step: int) -> list:
    """The step's sample ids over all ranks (sorted: which rank trains which sample depends on the world size,
    data.balance: tokens)."""
    return sorted(i for rank in trace if step in trace[rank] for i in trace[rank][step]["sample_ids"])


def _global_loss(trace: dict[int, dict[int, dict]], step: int) -> float:
    shares = [trace[rank][step]["loss"] for rank in trace if step in trace[rank]]
    return sum(shares) / len(shares)


@pytest.mark.parametrize("case", list(CASES))
def test_resume_with_another_world_size(case, train_data, tmp_path):
    train, before, after = CASES[case]
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        train_data["sft"],
        model={"dropout": 0.0},
        train={**train, "schedule": "constant", "max_steps": STEPS},
        data={"num_workers": 0},
        collate={"seq_length": 512},
    )
    full, cut, log = tmp_path / "full", tmp_path / "cut", tmp_path / "runs.log"
    _run(recipe, full, log, before)
    _run(recipe, cut, log, before, f"train.max_steps={CUT}")
    text = _run(recipe, cut, log, after)

    assert f"{before} → {after} ranks; universal checkpoint converted" in text
    assert verify_checkpoint(cut / f"checkpoint-{CUT}") is None  # the universal folder lives beside the manifest
    a, b = effective_trace(full), effective_trace(cut)
    assert sorted(b) == list(range(max(before, after)))
    for step in range(1, STEPS + 1):
        assert _global_stream(a, step) == _global_stream(b, step), step
        assert _global_loss(b, step) == pytest.approx(_global_loss(a, step), rel=1e-4, abs=1e-5), step

    wa, wb = final_weights(full), final_weights(cut)
    assert wa.keys() == wb.keys()
    # Per tensor, the weights differ by far less than the resumed steps moved them (from the weights at the
    # cut): lost Adam moments would change those updates by about their own size. An absolute tolerance is
    # the wrong scale here: Adam turns the last-bit differences of a near-zero gradient summed in another
    # order into differences of a few percent of lr (measured: 2.5% of the move, 5e-5 at lr 1e-3).
    at_cut = _universal_weights(cut / f"checkpoint-{CUT}")
    moved = 0.0
    for k in wa:
        diff = (wa[k].float() - wb[k].float()).abs().max().item()
        if k in at_cut:
            step = (wa[k].float().flatten() - at_cut[k]).abs().max().item()
            moved = max(moved, step)
            assert diff <= 0.1 * step + 1e-7, (k, diff, step)
        else:
            assert diff <= 1e-5, (k, diff)
    assert moved > 1e-4

    info = ensure_universal(cut / f"checkpoint-{CUT}", Collectives())  # a later resume reuses the conversion
    assert info["reused"] and info["bytes"] > 0
    assert json.loads((cut / "FINISHED").read_text())["step"] == STEPS


def test_elastic_reseed_is_repeatable_and_new_per_rank():
    """After a world-size change each rank reseeds from (seed, rank, step); (seed, rank) alone is unchanged."""
    draws = {}
    for key in [(7, 1), (7, 1, 2), (7, 1, 2), (7, 0, 2), (7, 1, 3)]:
        seed_rank(*key)
        draws.setdefault(key, []).append(torch.rand(4))
    assert torch.equal(*draws[(7, 1, 2)])
    distinct = [draws[k][0] for k in [(7, 1), (7, 1, 2), (7, 0, 2), (7, 1, 3)]]
    assert all(not torch.equal(x, y) for i, x in enumerate(distinct) for y in distinct[i + 1 :])


def _universal_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Flat fp32 weights of a converted checkpoint, named as the final export names them."""
    out = {}
    for folder in (checkpoint / UNIVERSAL / "ds" / "zero").iterdir():
        if (folder / "fp32.pt").is_file():
            saved = torch.load(folder / "fp32.pt", weights_only=False)  # ZeRO-2: {"param": t}; ZeRO-3: t
            name = folder.name.replace(".default.", ".")  # peft exports adapters without their name
            out[name] = (saved["param"] if isinstance(saved, dict) else saved).flatten()
    return out
