"""The loss of one step for each task: SFT (token-level cross-entropy) and DPO (TRL's pairwise losses).

`train_step` runs a rank's share of a step as micro-batches (xlam_hpc.train.microbatch), accumulating
gradients, and each micro-batch's loss is normalized by the whole *global* step: SFT by the step's loss
tokens / world size, DPO by its pairs / world size, so after DeepSpeed averages gradients over ranks every
loss token (pair) of the step weighs the same whatever its rank or micro-batch, and the result equals the
one-shot step. LM losses run in chunks (xlam_hpc.train.loss): no fp32 logits of all tokens at once.

DPO: sequence log-probs via TRL's `selective_log_softmax`; the loss formulas are those of TRL 1.16's
`DPOTrainer._compute_loss` (sigmoid, hinge, ipo), which TRL does not expose outside the trainer; a test
checks the values against DPOTrainer itself. The reference is the base model with LoRA adapters
disabled, or a frozen copy of the initial policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from xlam_hpc.train import loss as lm
from xlam_hpc.train.attention import VARLEN_KWARGS, flatten_packed
from xlam_hpc.train.config import DpoConfig
from xlam_hpc.train.microbatch import filler, split

__all__ = ["DpoTask", "SftTask", "dpo_loss", "sequence_logps", "train_step"]


@contextlib.contextmanager
def _eval(module: Any):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _model_inputs(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    # no cache: with one, transformers would not read packed sample boundaries from position_ids
    inputs = {"input_ids": batch["input_ids"].to(device), "use_cache": False}
    if "position_ids" in batch:
        inputs["position_ids"] = batch["position_ids"].to(device)  # packed: no attention mask on purpose
        for key in VARLEN_KWARGS:  # flattened for a varlen flash kernel (xlam_hpc.train.attention)
            if key in batch:
                value = batch[key]
                inputs[key] = value.to(device) if isinstance(value, torch.Tensor) else value
    else:
        inputs["attention_mask"] = batch["attention_mask"].to(device)
    return inputs


class SftTask:
    """Cross-entropy on assistant tokens, normalized by the global number of loss tokens."""

    pairs = False

    def __init__(
        self,
        reduce_sum: Callable[[int], int],
        world_size: int,
        *,
        chunk_tokens: int = 4096,
        liger: bool = False,
        varlen: bool = False,
    ) -> None:
        self.reduce_sum, self.world_size = reduce_sum, world_size
        self.chunk_tokens, self.liger = chunk_tokens, liger
        self.varlen = varlen
        """Packed micro-batches go to a varlen flash kernel: flattened to one row with cu_seq_lens."""

    def normalizer(self, batch: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        global_tokens = self.reduce_sum(int(batch["num_loss_tokens"]))
        return max(global_tokens, 1) / self.world_size, {"loss_tokens": global_tokens}

    def micro_loss(self, engine: Any, micro: dict[str, Any], norm: float, step: int = 0) -> tuple[Any, float]:
        if self.varlen and "row_lengths" in micro:
            micro = flatten_packed(micro)
        inputs = _model_inputs(micro, engine.device)
        labels = micro["labels"].to(engine.device)
        total = lm.token_loss_sum(engine, engine.module, inputs, labels, chunk=self.chunk_tokens, liger=self.liger)
        # this rank's sum / (global count / world): summed over ranks, the global per-token mean
        return total / norm, 0.0

    def metrics(self, metrics: dict[str, Any], stat: float) -> dict[str, Any]:
        return metrics

    def loss(self, engine: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The whole batch in one forward (no micro-batches)."""
        norm, metrics = self.normalizer(batch)
        return self.micro_loss(engine, batch, norm)[0], metrics


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over each row's labelled (completion) tokens."""
    from trl.trainer.utils import selective_log_softmax

    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    per_token = selective_log_softmax(logits[:, :-1], input_ids[:, 1:])
    return (per_token * mask).sum(dim=1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    loss_type: str,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair DPO loss, as in TRL 1.16 DPOTrainer._compute_loss (reverse-KL scores)."""
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    delta = chosen - rejected
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type == "ipo":
        assert chosen_tokens is not None and rejected_tokens is not None
        ipo = chosen / chosen_tokens.clamp(min=1.0) - rejected / rejected_tokens.clamp(min=1.0)
        return (ipo - 1 / (2 * beta)) ** 2
    raise ValueError(f"unsupported DPO loss_type '{loss_type}' (sigmoid, hinge, ipo)")


class DpoTask:
    """Chosen+rejected rows through the policy in one forward; reference log-probs from `reference`:
    None (LoRA: the policy with adapters disabled), a model or DeepSpeed engine (kept in eval mode), or a
    table of precomputed values (`lookup(step, pair_ids)`, xlam_hpc.train.reference)."""

    pairs = True

    def __init__(
        self,
        cfg: DpoConfig,
        reference: Any,
        reduce_sum: Callable[[int], int],
        world_size: int,
        *,
        chunk_tokens: int = 4096,
    ) -> None:
        if cfg.loss_type not in ("sigmoid", "hinge", "ipo"):
            from xlam_hpc.errors import ConfigError

            raise ConfigError(f"train.dpo.loss_type '{cfg.loss_type}' is not one of sigmoid, hinge, ipo")
        self.cfg, self.reference = cfg, reference
        self.reduce_sum, self.world_size, self.chunk_tokens = reduce_sum, world_size, chunk_tokens

    def reference_logps(self, engine: Any, micro: dict[str, Any], step: int) -> torch.Tensor:
        """[chosen..., rejected...] reference log-probs of a micro-batch's rows."""
        if hasattr(self.reference, "lookup"):
            if micro.get("filler"):
                return torch.zeros(micro["input_ids"].shape[0], device=engine.device)
            chosen, rejected = self.reference.lookup(step, micro["pair_ids"])
            return torch.tensor(chosen + rejected, dtype=torch.float32, device=engine.device)
        inputs = _model_inputs(micro, engine.device)
        labels = micro["labels"].to(engine.device)
        with torch.no_grad():
            if self.reference is None:  # LoRA: the base model with adapters disabled is the reference
                # eval(): the reference must not see (or draw RNG for) the policy's dropout
                with engine.module.disable_adapter(), _eval(engine.module):
                    return lm.sequence_logps(engine.module, engine.module, inputs, labels, chunk=self.chunk_tokens)
            module = getattr(self.reference, "module", self.reference)  # a DeepSpeed engine or the model
            return lm.sequence_logps(self.reference, module, inputs, labels, chunk=self.chunk_tokens)

    def normalizer(self, batch: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        global_pairs = self.reduce_sum(int(batch["num_pairs"]))
        return max(global_pairs, 1) / self.world_size, {"pairs": global_pairs}

    def micro_loss(self, engine: Any, micro: dict[str, Any], norm: float, step: int = 0) -> tuple[Any, float]:
        n = int(micro["num_pairs"])
        inputs = _model_inputs(micro, engine.device)
        labels = micro["labels"].to(engine.device)
        policy = lm.sequence_logps(engine, engine.module, inputs, labels, chunk=self.chunk_tokens)
        ref = self.reference_logps(engine, micro, step)
        tokens = (labels[:, 1:] != -100).sum(dim=1).float()
        per_pair = dpo_loss(
            policy[:n],
            policy[n:],
            ref[:n],
            ref[n:],
            beta=self.cfg.beta,
            loss_type=self.cfg.loss_type,
            chosen_tokens=tokens[:n],
            rejected_tokens=tokens[n:],
        )
        # sum / (global pairs / world): the mean over the global batch after DeepSpeed's gradient averaging.
        # `0 * policy.sum()` keeps the graph connected when this micro-batch holds no pair (every pair of
        # the rank was dropped as overlong, or a filler): all ranks must run the same backward for ZeRO.
        loss = per_pair.sum() / norm + 0.0 * policy.sum()
        margins = ((policy[:n] - ref[:n]) - (policy[n:] - ref[n:])).detach()
        return loss, float(margins.sum())

    def metrics(self, metrics: dict[str, Any], stat: float) -> dict[str, Any]:
        """reward_margin: the mean log-ratio margin over the global step's pairs (all ranks' sums)."""
        return {**metrics, "reward_margin": stat}

    def loss(self, engine: Any, batch: dict[str, Any], step: int = 0) -> tuple[Any, dict[str, Any]]:
        """The whole batch in one forward (no micro-batches)."""
        norm, metrics = self.normalizer(batch)
        micro = {**batch, "pair_ids": batch.get("sample_ids", [])}
        loss, margin = self.micro_loss(engine, micro, norm, step)
        return loss, self.metrics(metrics, margin / max(int(batch["num_pairs"]), 1))


def train_step(
    engine: Any,
    task: SftTask | DpoTask,
    batch: dict[str, Any],
    *,
    step: int,
    micro_batch_tokens: int,
    reduce_max: Callable[[int], int],
) -> tuple[float, dict[str, Any]]:
    """One optimizer step over this rank's `batch` (the `step`-th, 0-based) in micro-batches; returns this
    rank's share of the step's loss (summed over its micro-batches) and the task's metrics.

    Every rank runs the same number of backwards (the maximum; a rank with fewer runs zero-weighted
    fillers): with ZeRO each backward reduces gradients collectively. DeepSpeed's accumulation boundary is
    set by hand (its config keeps gradient_accumulation_steps=1, so it scales no loss): only the last
    backward reduces for the step, and `engine.step()` runs once, advancing the optimizer, the LR schedule
    and global_steps once per step.
    """
    norm, metrics = task.normalizer(batch)
    micros = split(batch, micro_batch_tokens, pairs=task.pairs)
    count = max(reduce_max(len(micros)), 1)
    total, stat = 0.0, 0.0
    for i in range(count):
        engine.set_gradient_accumulation_boundary(i == count - 1)
        real = i < len(micros)
        loss, value = task.micro_loss(engine, micros[i] if real else filler(batch), norm, step)
        if not real:
            loss = loss * 0.0
        engine.backward(loss)
        total += float(loss.detach())
        stat += value if real else 0.0
    engine.step()
    if task.pairs:
        stat /= max(int(batch["num_pairs"]), 1)
    return total, {**task.metrics(metrics, stat), "micro_batches": count}
