"""Our DPO loss (tasks.dpo_loss + sequence_logps, and DpoTask.loss) equals TRL 1.16 DPOTrainer's on the same batch.

TRL keeps its losses inside `DPOTrainer._compute_loss` (no public function), so the reference values come from
a real DPOTrainer on a 2-pair dataset: its own tokenization, collator batch ([chosen; rejected] rows with a
completion_mask), fused LM head and `compute_loss`. We recompute the loss on the same token ids, with labels =
input_ids where completion_mask is set, as our DPO step does. At init the policy equals the reference, so every
loss is a constant (log 2, 1, 1/(4β²)); a second policy with perturbed weights makes the log-ratios non-zero.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from xlam_hpc.collate import load_tokenizer
from xlam_hpc.train.config import DpoConfig, ModelConfig
from xlam_hpc.train.model import build_model
from xlam_hpc.train.tasks import DpoTask, dpo_loss, sequence_logps

BETA = 0.1
PAIRS = [  # chosen and rejected of different lengths, longer one first in one pair and second in the other
    {
        "prompt": "What is the weather in Paris? Use the get_weather tool.",
        "chosen": ' [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        "rejected": " It is sunny.",
    },
    {
        "prompt": "Add 2 and 3.",
        "chosen": " 5",
        "rejected": " The answer is probably 6, but I am not sure about it at all.",
    },
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("mistral-v3")


def _trainer(tokenizer, loss_type: str, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    policy = build_model(ModelConfig(name_or_path="tiny-mistral", dropout=0.0), tokenizer)
    reference = copy.deepcopy(policy)  # TRL cannot rebuild a config-only model from a path
    args = DPOConfig(
        output_dir=str(tmp_path / loss_type),
        loss_type=[loss_type],
        beta=BETA,
        precompute_ref_log_probs=False,
        per_device_train_batch_size=2,
        bf16=False,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        dataset_num_proc=None,
    )
    trainer = DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer, {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _perturb(model) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def _ours(policy, reference, batch, loss_type: str):
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = ids.masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        logps = sequence_logps(policy(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), ids, labels)
        ref = sequence_logps(reference(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), ids, labels)
    n = ids.shape[0] // 2
    tokens = (labels[:, 1:] != -100).sum(dim=1).float()
    per_pair = dpo_loss(
        logps[:n],
        logps[n:],
        ref[:n],
        ref[n:],
        beta=BETA,
        loss_type=loss_type,
        chosen_tokens=tokens[:n],
        rejected_tokens=tokens[n:],
    )
    # our training step itself: one rank, the reference a frozen copy (full fine-tuning)
    task = DpoTask(DpoConfig(beta=BETA, loss_type=loss_type), reference, reduce_sum=lambda v: v, world_size=1)
    step_batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "num_pairs": n}
    with torch.no_grad():
        step_loss, metrics = task.loss(_Engine(policy), step_batch)
    return per_pair.mean(), step_loss, logps, metrics


class _Engine:
    """What DpoTask needs of a DeepSpeed engine: call, device, module."""

    def __init__(self, module) -> None:
        self.module, self.device = module, torch.device("cpu")

    def __call__(self, **kwargs):
        return self.module(**kwargs)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_loss_matches_trl(loss_type, tokenizer, tmp_path):
    trainer, batch = _trainer(tokenizer, loss_type, tmp_path)
    policy, reference = trainer.model, trainer.ref_model
    assert batch["input_ids"].shape[0] == 4 and bool((batch["attention_mask"] == 0).any())  # padding exercised
    constant = {"sigmoid": math.log(2), "hinge": 1.0, "ipo": 1 / (4 * BETA**2)}[loss_type]
    for perturbed in (False, True):
        if perturbed:
            _perturb(policy)
        trainer._metrics["train"].clear()
        with torch.no_grad():
            theirs = trainer.compute_loss(policy, dict(batch))
        ours, step_loss, logps, metrics = _ours(policy, reference, batch, loss_type)
        where = f"{loss_type}, perturbed={perturbed}"
        assert abs(ours.item() - theirs.item()) <= 1e-5, (where, ours.item(), theirs.item())
        assert abs(step_loss.item() - theirs.item()) <= 1e-5, (where, step_loss.item(), theirs.item())
        # the log-probs themselves, against TRL's logged means (fused LM head vs selective_log_softmax)
        trl_metrics = trainer._metrics["train"]
        assert abs(logps[:2].mean().item() - trl_metrics["logps/chosen"][-1]) <= 1e-4, where
        assert abs(logps[2:].mean().item() - trl_metrics["logps/rejected"][-1]) <= 1e-4, where
        assert abs(BETA * metrics["reward_margin"] - trl_metrics["rewards/margins"][-1]) <= 1e-5, where
        if perturbed:  # the comparison has teeth: far from the policy == reference constant
            assert abs(theirs.item() - constant) > 1e-2, (where, theirs.item())
        else:
            assert abs(theirs.item() - constant) <= 1e-5, (where, theirs.item())
