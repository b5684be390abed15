"""The DPO reference: a partitioned inference engine (`reference: model`), or log-probs precomputed once by the
initial policy and stored in output_dir (`reference: precomputed`).

model: like TRL's `prepare_deepspeed`, the reference gets its own DeepSpeed engine without optimizer, ZeRO-3
when the policy uses ZeRO-3 (its weights stay partitioned: a second 7B model costs 14 GB / world size per
rank in bf16), otherwise stage 0 (a full copy per rank, in the policy's dtype).

precomputed: before the first update each rank runs the loader's batches for steps [0, max_steps) through
the policy (eval mode, no grad, its own dtype and micro-batches) and writes reference/rank<R>.json:
{step: {sample id: [chosen, rejected]}}. Training reads the union of all ranks' files, so the table stays
valid when a run resumes on another number of ranks; no second model exists during training, and a resumed
run never recomputes (that would use the trained policy).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

from xlam_hpc.errors import ConfigError

__all__ = ["PrecomputedReference", "precompute", "prepare_reference", "reference_engine"]

COMPLETE = "COMPLETE"


def reference_engine(reference: Any, policy: Any, ds_config: dict[str, Any]) -> Any:
    """`reference` as an eval-mode DeepSpeed engine in the policy engine's dtype: ZeRO-3 if the policy's is
    (partitioned), stage 0 otherwise."""
    import deepspeed

    config = copy.deepcopy(ds_config)
    zero = config.get("zero_optimization", {})
    if zero.get("stage") == 3:
        config["zero_optimization"] = {
            k: v for k, v in zero.items() if k not in ("offload_optimizer", "stage3_gather_16bit_weights_on_model_save")
        }
    else:
        config["zero_optimization"] = {"stage": 0}
    dtype = next(policy.module.parameters()).dtype
    if zero.get("stage") != 3:  # a ZeRO-3 (zero.Init) model is built in its dtype already
        reference.to(dtype=dtype)
    engine, *_ = deepspeed.initialize(model=reference, config=config)
    engine.eval()  # DeepSpeedEngine.eval() returns None
    return engine


class PrecomputedReference:
    """The stored reference log-probs, looked up by (step, sample id)."""

    def __init__(self, table: dict[str, dict[str, list[float]]]) -> None:
        self.table = table

    @classmethod
    def load(cls, folder: Path) -> PrecomputedReference:
        table: dict[str, dict[str, list[float]]] = {}
        for path in sorted(folder.glob("rank*.json")):
            for step, values in json.loads(path.read_text()).items():
                table.setdefault(step, {}).update(values)
        return cls(table)

    def check(self, start: int, stop: int) -> None:
        """Every step in [start, stop) was precomputed (checked up front: the table is the same on all ranks,
        so they all stop here together instead of one failing inside a collective step)."""
        missing = [s for s in range(start, stop) if str(s) not in self.table]
        if missing:
            _missing(missing[0], "")

    def lookup(self, step: int, pair_ids: list[str]) -> tuple[list[float], list[float]]:
        values = self.table.get(str(step), {})
        missing = [i for i in pair_ids if i not in values]
        if missing:
            _missing(step, f" sample(s) {missing[:3]}")
        return [values[i][0] for i in pair_ids], [values[i][1] for i in pair_ids]


def _missing(step: int, what: str) -> None:
    raise ConfigError(
        f"train.dpo.reference: precomputed holds no reference log-probs for step {step}{what} (was max_steps "
        "raised, or the data changed, after they were computed?); start a new output_dir or use reference: model"
    )


def precompute(run: Any, folder: Path) -> None:
    """Each rank: the reference log-probs of its pairs for steps [0, max_steps) by the current (initial) policy."""
    from xlam_hpc.train import loss as lm
    from xlam_hpc.train.microbatch import filler, split
    from xlam_hpc.train.runtime import all_reduce
    from xlam_hpc.train.tasks import _eval, _model_inputs

    t, engine = run.recipe.train, run.engine
    module, device = engine.module, engine.device
    dataset = run.loader().dataset(0)
    table: dict[str, dict[str, list[float]]] = {}
    with torch.no_grad(), _eval(module):
        for step in range(t.max_steps):
            batch = dataset.make_batch(step)
            table.setdefault(str(step), {})  # a step whose pairs were all dropped still counts as computed
            micros = split(batch, t.micro_batch_tokens, pairs=True)
            count = int(all_reduce(len(micros), "max", run.coll.device))  # ZeRO-3 forwards gather collectively
            for i in range(max(count, 1)):
                micro = micros[i] if i < len(micros) else filler(batch)
                logps = lm.sequence_logps(
                    module,
                    module,
                    _model_inputs(micro, device),
                    micro["labels"].to(device),
                    chunk=t.loss_chunk_tokens,
                ).tolist()
                n = int(micro["num_pairs"])
                for k, sample in enumerate(micro["pair_ids"]):
                    table.setdefault(str(step), {})[sample] = [logps[k], logps[n + k]]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"rank{run.dist.rank}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(table))
    os.replace(tmp, target)


def prepare_reference(run: Any, step: int) -> PrecomputedReference:
    """The precomputed table: computed now on a fresh run (step 0), read from output_dir/reference otherwise."""
    folder = run.out / "reference"
    done = folder / COMPLETE
    if not done.exists():
        if step > 0:
            raise ConfigError(
                f"{folder}: no precomputed DPO reference log-probs, but the run resumes at step {step}; they must "
                "come from the initial policy (start a new output_dir, or use train.dpo.reference: model)"
            )
        precompute(run, folder)
        run.coll.barrier()
        if run.dist.rank == 0:
            done.write_text(json.dumps({"max_steps": run.recipe.train.max_steps}) + "\n")
    run.coll.barrier()
    reference = PrecomputedReference.load(folder)
    reference.check(step, run.recipe.train.max_steps)
    return reference
