"""The loss of one step for each task: SFT (token-level cross-entropy) and DPO (TRL's pairwise losses).

SFT: transformers' causal-LM loss with `num_items_in_batch` = loss tokens of the *global* batch / world
size, so after DeepSpeed averages gradients over ranks every loss token of the step weighs the same,
whatever its rank (per-rank means would overweight ranks with few tokens).

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

from xlam_hpc.train.config import DpoConfig

__all__ = ["DpoTask", "SftTask", "dpo_loss", "sequence_logps"]


@contextlib.contextmanager
def _eval(module: Any):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _model_inputs(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    inputs = {"input_ids": batch["input_ids"].to(device), "use_cache": False}
    if "position_ids" in batch:
        inputs["position_ids"] = batch["position_ids"].to(device)  # packed: no attention mask on purpose
    else:
        inputs["attention_mask"] = batch["attention_mask"].to(device)
    return inputs


class SftTask:
    """Cross-entropy on assistant tokens, normalized by the global number of loss tokens."""

    def __init__(self, reduce_sum: Callable[[int], int], world_size: int) -> None:
        self.reduce_sum, self.world_size = reduce_sum, world_size

    def loss(self, engine: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        global_tokens = self.reduce_sum(int(batch["num_loss_tokens"]))
        inputs = _model_inputs(batch, engine.device)
        labels = batch["labels"].to(engine.device)
        out = engine(**inputs, labels=labels, num_items_in_batch=max(global_tokens, 1) / self.world_size)
        # the reported loss is the global per-token mean: (this rank's sum / global count) summed over ranks
        return out.loss, {"loss_tokens": global_tokens}


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
    """One forward of chosen+rejected rows through the policy and the reference."""

    def __init__(self, cfg: DpoConfig, reference: Any, reduce_sum: Callable[[int], int], world_size: int) -> None:
        if cfg.loss_type not in ("sigmoid", "hinge", "ipo"):
            from xlam_hpc.errors import ConfigError

            raise ConfigError(f"train.dpo.loss_type '{cfg.loss_type}' is not one of sigmoid, hinge, ipo")
        self.cfg, self.reference = cfg, reference
        self.reduce_sum, self.world_size = reduce_sum, world_size

    def _reference_logps(self, engine: Any, inputs: dict[str, Any], ids: Any, labels: Any) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is None:  # LoRA: the base model with adapters disabled is the reference
                # eval(): the reference must not see (or draw RNG for) the policy's dropout
                with engine.module.disable_adapter(), _eval(engine.module):
                    logits = engine.module(**inputs).logits
            else:
                logits = self.reference(**inputs).logits  # a frozen copy, kept in eval mode
        return sequence_logps(logits.float(), ids, labels)

    def loss(self, engine: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        n = batch["num_pairs"]
        global_pairs = self.reduce_sum(n)
        inputs = _model_inputs(batch, engine.device)
        ids, labels = inputs["input_ids"], batch["labels"].to(engine.device)
        logits = engine(**inputs).logits
        policy = sequence_logps(logits.float(), ids, labels)
        ref = self._reference_logps(engine, inputs, ids, labels)
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
        # `0 * logits.sum()` keeps the graph connected when every pair of this rank was dropped (overlong):
        # all ranks must run the same backward for ZeRO's gradient reduction.
        loss = per_pair.sum() / (max(global_pairs, 1) / self.world_size) + 0.0 * logits.sum()
        margins = ((policy[:n] - ref[:n]) - (policy[n:] - ref[n:])).detach()
        return loss, {"pairs": global_pairs, "reward_margin": float(margins.mean()) if n else 0.0}
