"""LM losses that never hold the logits of all tokens at once in fp32.

The model is run without its LM head: for the duration of the call, the output-embedding module's forward
is replaced by our loss (`_head_as`). It is still *called* as a module, so DeepSpeed ZeRO-3 gathers its
(possibly tied, possibly partitioned) weight around our computation and reduces its gradient as usual;
peft wraps neither the head nor its call. The model returns our value in place of `logits`.

- `token_loss_sum`: the summed cross-entropy of the labelled tokens. Per chunk of `chunk` tokens the fp32
  logits, the loss and the gradients wrt the hidden states and the head weight are computed in the forward
  (the scheme of Liger's fused linear cross-entropy), so the backward needs no recompute. Hand-written
  because transformers computes full logits and Liger needs CUDA; when the kernel choice picks Liger
  (`kernels.select_kernels`: CUDA, liger-kernel installed, not under torch.compile) its kernel replaces ours.
- `sequence_logps`: per-row sums of log p(label) (DPO). The row weights of the gradient are only known in
  the backward, so each chunk is checkpointed and recomputed there instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["sequence_logps", "shifted_labels", "token_loss_sum"]

IGNORE = -100


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts (the next token's), IGNORE past each row's end; for packed rows a
    sample's first token is unlabelled, so nothing leaks across a sample boundary (as transformers does)."""
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)


@contextlib.contextmanager
def _head_as(module: Any, fn: Callable[[Any, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    head = module.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError("chunked loss needs a bias-free output embedding (lm_head) module")
    own = head.__dict__.get("forward")
    head.forward = lambda hidden: fn(head, hidden)
    try:
        yield
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


def _call(call: Callable[..., Any], module: Any, inputs: dict[str, Any], fn: Callable[..., torch.Tensor]) -> Any:
    with _head_as(module, fn):
        return call(**inputs).logits


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum over tokens of CE(h @ W^T, target); gradients computed chunk by chunk in the forward."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, chunk: int) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.zeros_like(h) if need_h else None
        # fp32 accumulation over chunks (one vocab x hidden buffer: 2 GB at 128k x 4096)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
        for start in range(0, h.shape[0], chunk):
            hc, tc = h[start : start + chunk], target[start : start + chunk]
            logits = (hc @ weight.t()).float()
            picked = logits.gather(1, tc[:, None]).squeeze(1)
            # softmax by hand, in place of the logits: torch.logsumexp is a separate, ~2x slower pass on CPU
            peak = logits.amax(dim=-1, keepdim=True)
            exp = logits.sub_(peak).exp_()
            norm = exp.sum(dim=-1, keepdim=True)
            total += (peak.squeeze(1) + norm.log().squeeze(1) - picked).sum()
            if need_h or need_w:
                grad = exp.div_(norm)
                grad[torch.arange(len(tc), device=h.device), tc] -= 1.0
                if need_h:
                    grad_h[start : start + chunk] = grad.to(weight.dtype) @ weight
                if need_w:
                    grad_w.addmm_(grad.t(), hc.float())
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype) if grad_w is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        grad_h, grad_w = ctx.saved_tensors
        return (
            grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None,
            grad_w * grad_out.to(grad_w.dtype) if grad_w is not None else None,
            None,
            None,
        )


def _flat_labelled(hidden: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states and targets of the labelled positions only (prompt tokens cost no logits), row index."""
    flat = target.reshape(-1)
    keep = flat != IGNORE
    rows = torch.arange(target.shape[0], device=target.device).repeat_interleave(target.shape[1])
    return hidden.reshape(-1, hidden.shape[-1])[keep], flat[keep], rows[keep]


def token_loss_sum(
    call: Callable[..., Any],
    module: Any,
    inputs: dict[str, Any],
    labels: torch.Tensor,
    *,
    chunk: int,
    liger: bool = False,
) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled tokens of `labels` (unshifted, as for transformers).

    `call` runs the model (a DeepSpeed engine, or the module itself), `module` is the model the head belongs to.
    """
    target = shifted_labels(labels)

    def head(lm_head: Any, hidden: torch.Tensor) -> torch.Tensor:
        h, t, _ = _flat_labelled(hidden, target)
        if liger and h.shape[0] > 0:  # ours for an empty selection: it keeps the head in the graph
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            return LigerFusedLinearCrossEntropyLoss(reduction="sum")(lm_head.weight, h, t)
        return _FusedLinearCrossEntropy.apply(h, lm_head.weight, t, chunk)

    return _call(call, module, inputs, head)


def _chunk_logps(h: torch.Tensor, weight: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    logits = (h @ weight.t()).float()
    return logits.gather(1, t[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def sequence_logps(
    call: Callable[..., Any], module: Any, inputs: dict[str, Any], labels: torch.Tensor, *, chunk: int
) -> torch.Tensor:
    """Per row: sum of log p(token) over its labelled tokens (fp32), as tasks.logits_sequence_logps."""
    target = shifted_labels(labels)

    def head(lm_head: Any, hidden: torch.Tensor) -> torch.Tensor:
        h, t, rows = _flat_labelled(hidden, target)
        out = torch.zeros(target.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.is_grad_enabled() and (h.requires_grad or lm_head.weight.requires_grad)
        # at least one (possibly empty) chunk: the head stays in the graph when a row set has no labels
        for start in range(0, max(h.shape[0], 1), chunk):
            args = (h[start : start + chunk], lm_head.weight, t[start : start + chunk])
            logp = checkpoint(_chunk_logps, *args, use_reentrant=False) if grad else _chunk_logps(*args)
            out = out.index_add(0, rows[start : start + chunk], logp)
        return out

    return _call(call, module, inputs, head)
